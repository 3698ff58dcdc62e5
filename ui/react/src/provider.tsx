import { createContext, useContext, useEffect, useMemo, useRef, useState, useSyncExternalStore, type ReactNode } from "react";
import { CaasClient, createClient, type ClientOptions } from "@caas/client";

interface Kit {
  client: CaasClient;
  /** The signed-in user. */
  userId: string;
  /** Display names by user id (ids are shown for users not in it). */
  names: Readonly<Record<string, string>>;
}

const KitContext = createContext<Kit | null>(null);

export interface CaasProviderProps {
  /** Options of the one client the provider creates (and closes on unmount)… */
  options?: ClientOptions;
  /** …or a client the app created and owns. */
  client?: CaasClient;
  /** The signed-in user (read from the token when omitted). */
  userId?: string;
  names?: Record<string, string>;
  /** `light`, `dark`, or `auto` (the system's preference; the default). */
  theme?: "light" | "dark" | "auto";
  children: ReactNode;
}

/** Owns one SDK client for the components below it: one socket, one outbox, every channel's resume. */
export function CaasProvider({ options, client: given, userId, names = {}, theme = "auto", children }: CaasProviderProps) {
  const [owned] = useState(() => (given ? null : createClient(options ?? { baseUrl: location.origin })));
  const client = given ?? (owned as CaasClient);
  const closing = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => {
    // StrictMode unmounts and mounts again at once: close only if no mount follows, or the
    // channels the children opened meanwhile would be closed under them
    clearTimeout(closing.current);
    client.connect();
    return () => {
      if (owned) closing.current = setTimeout(() => owned.close(), 0);
    };
  }, [client, owned]);
  const kit = useMemo(() => ({ client, userId: userId ?? client.userId() ?? "", names }), [client, userId, names]);
  return (
    <KitContext.Provider value={kit}>
      <div className="caas" data-theme={theme === "auto" ? undefined : theme}>
        {children}
      </div>
    </KitContext.Provider>
  );
}

/** The provider's client, user and names. */
export function useCaas(): Kit {
  const kit = useContext(KitContext);
  if (kit === null) throw new Error("@caas/react: wrap the components in <CaasProvider>");
  return kit;
}

/** A user's display name. */
export function useName(userId: string): string {
  const { names } = useCaas();
  return names[userId] ?? userId;
}

/** Whether the client's socket is open (false while it reconnects). */
export function useConnected(): boolean {
  const { client } = useCaas();
  return useSyncExternalStore(
    (changed) => {
      const offs = [client.on("connected", changed), client.on("disconnected", changed)];
      return () => offs.forEach((off) => off());
    },
    () => client.connected,
    () => false,
  );
}
