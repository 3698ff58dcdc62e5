// Small shared pieces of the portal's pages: loading a resource, showing an error, a titled section.
import { useCallback, useEffect, useState, type ReactNode } from "react";
import { ApiError } from "./api";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

/** Runs `load` now and on `reload()`; keeps the last answer while reloading. */
export function useLoad<T>(load: () => Promise<T>, deps: readonly unknown[]): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [round, setRound] = useState(0);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const run = useCallback(load, deps);
  useEffect(() => {
    let live = true;
    run().then(
      (value) => {
        if (live) {
          setData(value);
          setError(null);
        }
      },
      (err: unknown) => {
        if (live) setError(describe(err));
      },
    );
    return () => {
      live = false;
    };
  }, [run, round]);
  return { data, error, reload: () => setRound((n) => n + 1) };
}

export function describe(err: unknown): string {
  if (err instanceof ApiError) return `${err.message} (${err.status} ${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

export function ErrorNote({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <p role="alert" className="error">
      {error}
    </p>
  );
}

export function Section({ title, children }: { title: string; children: ReactNode }) {
  const id = `section-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section aria-labelledby={id} className="card">
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** Runs an action, reporting its error; `busy` while it runs. */
export function useAction(): {
  busy: boolean;
  error: string | null;
  run: (action: () => Promise<void>) => Promise<void>;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}

export function formatMoney(minor: number, currency: string): string {
  return new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() }).format(minor / 100);
}

/** A table's header row; `actions` adds a last column for the row's buttons (named for screen readers). */
export function Head({ columns, actions = "" }: { columns: string[]; actions?: string }) {
  return (
    <thead>
      <tr>
        {columns.map((c) => (
          <th scope="col" key={c}>
            {c}
          </th>
        ))}
        {actions ? (
          <th scope="col">
            <span className="sr-only">{actions}</span>
          </th>
        ) : null}
      </tr>
    </thead>
  );
}

/** "First page" (when not on it) and "Next page" (when the list has a cursor). */
export function Pager({ first, next, onFirst, onNext }: { first: boolean; next: string | null | undefined; onFirst: () => void; onNext: (cursor: string) => void }) {
  return (
    <div className="pager">
      {first ? null : (
        <button type="button" onClick={onFirst}>
          First page
        </button>
      )}
      {next ? (
        <button type="button" onClick={() => onNext(next)}>
          Next page
        </button>
      ) : null}
    </div>
  );
}
