// @caas/client/e2e: Signal-protocol end-to-end encryption (X3DH, Double Ratchet, sender keys) over
// libsodium, loaded on first use. docs/sdk/e2e-typescript.md describes it.
export { E2eDevice } from "./device.js";
export type { Address, DeviceJSON, DeviceOptions, E2eEnvelope, MessageContent, WireBundle, WirePrekey, WireSignedPrekey } from "./device.js";
export { E2eClient } from "./client.js";
export type { DeviceStore, E2eClientOptions, E2eMessage } from "./client.js";
export { E2eError, loadSodium } from "./sodium.js";
export { MAX_SKIP } from "./ratchet.js";
