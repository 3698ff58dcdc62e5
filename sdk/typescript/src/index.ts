export { CaasError } from "./errors.js";
export { HttpClient } from "./http.js";
export type { CallArgs, HttpOptions, OperationId, RequestBody, ResponseBody, Schemas, TokenSource } from "./http.js";
