/**
 * effect-jobs: a typed background job queue for Effect 4 and PostgreSQL.
 *
 * Delivery is at least once: handlers must be idempotent. Every export is listed,
 * with one line each, in docs/api.md (checked by `npm run api-check`).
 *
 * @since 0.1.0
 */
// First: on a Node.js older than the package supports, fail with the version it needs.
import "./internal/nodeVersion.ts"

export * as Bundle from "./Bundle.ts"
export * as Database from "./Database.ts"
export * from "./Errors.ts"
export * as Job from "./Job.ts"
export * as Jobs from "./Jobs.ts"
export * as JobsAdmin from "./JobsAdmin.ts"
export * as Metrics from "./Metrics.ts"
export * as Migrations from "./Migrations.ts"
export * as Observer from "./Observer.ts"
export * as Periodic from "./Periodic.ts"
export * as PgSchema from "./PgSchema.ts"
export * as RateLimiterStore from "./RateLimiterStore.ts"
export * as RequestId from "./RequestId.ts"
export * as Testing from "./Testing.ts"
export * as Worker from "./Worker.ts"
