// Soko's TypeScript client: the generated services and messages, credentials, decoded errors.
// Transports: `@soko/client/web` (grpc-web, browsers and React Native), `@soko/client/node` (gRPC).
export { createClient } from "@connectrpc/connect";
export { AuthService } from "./gen/soko/auth/v1/auth_pb.js";
export { CatalogService } from "./gen/soko/catalog/v1/catalog_pb.js";
export { SearchService } from "./gen/soko/search/v1/search_pb.js";
export { AdminService } from "./gen/soko/admin/v1/admin_pb.js";
export { Health } from "./gen/grpc/health/v1/health_pb.js";
export * as auth from "./gen/soko/auth/v1/auth_pb.js";
export * as catalog from "./gen/soko/catalog/v1/catalog_pb.js";
export * as search from "./gen/soko/search/v1/search_pb.js";
export * as admin from "./gen/soko/admin/v1/admin_pb.js";
export { Tokens, bearerAuth, apiKeyAuth } from "./auth.js";
export { SokoError, type FieldViolation } from "./errors.js";
export type { Credentials } from "./credentials.js";
