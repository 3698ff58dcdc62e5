import { useState, type FormEvent } from "react";
import { signIn, type Session } from "../api";
import { describe } from "../ui";

/** Exchanges a tenant API key for a session: the key is sent once and never stored by the page. */
export function SignIn({ onSignedIn, error }: { onSignedIn: (s: Session) => void; error?: string | null }) {
  const [key, setKey] = useState("");
  const [problem, setProblem] = useState<string | null>(error ?? null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      const session = await signIn(key.trim());
      setKey("");
      onSignedIn(session);
    } catch (err) {
      setProblem(describe(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="centered">
      <form className="card signin" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">CAAS console</h1>
        <p>Sign in with one of your tenant's API keys. The key is exchanged for a session; it is not kept in the browser.</p>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={key}
          onChange={(e) => setKey(e.target.value)}
          placeholder="caas_sk_…"
          required
        />
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {problem ? (
          <p role="alert" className="error">
            {problem}
          </p>
        ) : null}
      </form>
    </main>
  );
}
