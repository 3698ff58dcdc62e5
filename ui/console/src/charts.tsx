// The usage and bill charts (Recharts). Each chart has a table of the same figures beside it (accessible,
// and what the browser tests read), the chart being an image of them.
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import type { BillingPreview, UsageReport } from "./api";

const COLORS = ["#1f5fbf", "#b35900", "#2e7d32", "#8e24aa", "#c62828", "#00838f"];

export function bucketLabel(start: string, granularity: UsageReport["granularity"]): string {
  const d = new Date(start);
  if (granularity === "hour") return `${String(d.getUTCHours()).padStart(2, "0")}:00`;
  if (granularity === "day") return `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

export function UsageChart({ report, meters }: { report: UsageReport; meters: string[] }) {
  const data = report.buckets.map((b) => ({ label: bucketLabel(b.start, report.granularity), ...b.meters }));
  return (
    <figure className="chart" aria-label={`Usage by ${report.granularity}: ${meters.join(", ")}`}>
      <ResponsiveContainer width="100%" height={280}>
        <BarChart data={data} margin={{ top: 8, right: 16, bottom: 8, left: 8 }}>
          <CartesianGrid strokeDasharray="3 3" />
          <XAxis dataKey="label" />
          <YAxis allowDecimals={false} />
          <Tooltip />
          <Legend />
          {meters.map((m, i) => (
            <Bar key={m} dataKey={m} name={m} fill={COLORS[i % COLORS.length]} isAnimationActive={false} />
          ))}
        </BarChart>
      </ResponsiveContainer>
    </figure>
  );
}

/** Each meter's use of what the plan includes this period (%), and what it costs so far: a bill that is all
 * zeros (a plan with nothing billable yet) still shows how close each meter is to its allowance. */
export function BillChart({ preview }: { preview: BillingPreview }) {
  const data = preview.lines
    .filter((l) => l.included > 0 || l.amount > 0)
    .map((l) => ({
      label: `${l.meter} (${l.plan})`,
      percent: l.included > 0 ? Math.round((10000 * l.used) / l.included) / 100 : 100,
      amount: l.amount / 100,
    }));
  return (
    <figure className="chart" aria-label="The period so far: each meter's share of the plan's included quantity, and its amount">
      <ResponsiveContainer width="100%" height={60 + 36 * data.length}>
        <BarChart data={data} layout="vertical" margin={{ top: 8, right: 16, bottom: 8, left: 24 }}>
          <CartesianGrid strokeDasharray="3 3" />
          <XAxis type="number" />
          <YAxis type="category" dataKey="label" width={180} />
          <Tooltip />
          <Legend />
          <Bar dataKey="percent" name="% of included used" fill={COLORS[0]} isAnimationActive={false} />
          <Bar dataKey="amount" name={`amount (${preview.currency.toUpperCase()})`} fill={COLORS[1]} isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </figure>
  );
}
