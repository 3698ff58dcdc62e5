import { useState } from "react";
import { call, type BillingPreview, type Session, type UsageReport } from "../api";
import { BillChart, UsageChart, bucketLabel } from "../charts";
import { ErrorNote, Section, formatMoney, useLoad } from "../ui";

const RANGES = {
  "24h": { label: "last 24 hours", granularity: "hour", hours: 24 },
  "30d": { label: "last 30 days", granularity: "day", hours: 24 * 30 },
} as const;
const CHARTED = ["messages", "replies", "edits", "api_writes", "api_reads", "deliveries"];

function range(key: keyof typeof RANGES): { from: string; to: string; granularity: string } {
  const r = RANGES[key];
  const now = new Date();
  const end = new Date(now);
  if (r.granularity === "hour") end.setUTCMinutes(0, 0, 0);
  else end.setUTCHours(0, 0, 0, 0);
  end.setTime(end.getTime() + (r.granularity === "hour" ? 3600e3 : 86400e3));
  const from = new Date(end.getTime() - r.hours * 3600e3);
  return { from: from.toISOString(), to: end.toISOString(), granularity: r.granularity };
}

/** Usage from /v1/usage and the bill so far from /v1/billing/preview, as charts and tables. */
export function Usage(_: { session: Session }) {
  const [span, setSpan] = useState<keyof typeof RANGES>("24h");
  const [meters, setMeters] = useState<string[]>(["messages", "api_writes"]);
  const usage = useLoad(() => call<UsageReport>("GET", "/usage", undefined, range(span)), [span]);
  const preview = useLoad(() => call<BillingPreview>("GET", "/billing/preview"), []);
  const report = usage.data;
  const toggle = (m: string) => setMeters((ms) => (ms.includes(m) ? ms.filter((x) => x !== m) : [...ms, m]));
  const busy = report ? report.buckets.filter((b) => meters.some((m) => (b.meters[m] ?? 0) > 0)) : [];
  return (
    <>
      <ErrorNote error={usage.error ?? preview.error} />
      <Section title="Usage">
        <div className="inline">
          <label htmlFor="usage-span">Range</label>
          <select id="usage-span" value={span} onChange={(e) => setSpan(e.target.value as keyof typeof RANGES)}>
            {Object.entries(RANGES).map(([k, r]) => (
              <option key={k} value={k}>
                {r.label}
              </option>
            ))}
          </select>
          <button type="button" onClick={usage.reload}>
            Refresh
          </button>
        </div>
        <fieldset className="inline">
          <legend>Meters</legend>
          {CHARTED.map((m) => (
            <label key={m} className="check">
              <input type="checkbox" checked={meters.includes(m)} onChange={() => toggle(m)} /> {m}
            </label>
          ))}
        </fieldset>
        {report ? <UsageChart report={report} meters={meters} /> : <p aria-live="polite">Loading usage…</p>}
        {report ? (
          <>
            <h3>Totals ({RANGES[span].label})</h3>
            <table aria-label="Usage totals">
              <tbody>
                {meters.map((m) => (
                  <tr key={m}>
                    <th scope="row">{m}</th>
                    <td data-total={m}>{report.totals[m] ?? 0}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <h3>Busy {report.granularity === "hour" ? "hours" : "days"}</h3>
            <table aria-label="Usage per bucket">
              <thead>
                <tr>
                  <th scope="col">Bucket (UTC)</th>
                  {meters.map((m) => (
                    <th scope="col" key={m}>
                      {m}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {busy.map((b) => (
                  <tr key={b.start}>
                    <td>{bucketLabel(b.start, report.granularity)}</td>
                    {meters.map((m) => (
                      <td key={m}>{b.meters[m] ?? 0}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Section>
      <Section title="Invoice preview">
        {preview.data ? (
          <>
            <p>
              {preview.data.period.label}, plan <strong>{preview.data.plan}</strong>: base fee{" "}
              {formatMoney(preview.data.base_fee, preview.data.currency)}, total so far{" "}
              <strong data-bill-total>{formatMoney(preview.data.total, preview.data.currency)}</strong>.
            </p>
            <BillChart preview={preview.data} />
            <table aria-label="Invoice lines">
              <thead>
                <tr>
                  <th scope="col">Meter</th>
                  <th scope="col">Plan</th>
                  <th scope="col">Used</th>
                  <th scope="col">Included</th>
                  <th scope="col">Billable</th>
                  <th scope="col">Amount</th>
                </tr>
              </thead>
              <tbody>
                {preview.data.lines.map((l) => (
                  <tr key={`${l.meter}-${l.plan}`}>
                    <td>{l.meter}</td>
                    <td>{l.plan}</td>
                    <td>{l.used}</td>
                    <td>{l.included}</td>
                    <td>{l.billable}</td>
                    <td>{formatMoney(l.amount, preview.data!.currency)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : (
          <p aria-live="polite">Loading the preview…</p>
        )}
      </Section>
    </>
  );
}
