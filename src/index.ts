/**
 * effect-jobs: a typed background job queue for Effect 4 and PostgreSQL.
 *
 * Delivery is at least once: handlers must be idempotent.
 *
 * @since 0.1.0
 */
// First: on a Node.js older than 22.19 this throws a clear message before Effect runs.
import "./internal/nodeVersion.ts"
export * as Admin from "./Admin.ts"
export { JobsAdmin } from "./Admin.ts"
export * as Database from "./Database.ts"
export * from "./Errors.ts"
export * as Job from "./Job.ts"
export { Jobs } from "./Jobs.ts"
export * as JobsClient from "./Jobs.ts"
export * as Metrics from "./Metrics.ts"
export * as Migrations from "./Migrations.ts"
export * as Observer from "./Observer.ts"
export { RequestId } from "./RequestId.ts"
export * as Testing from "./Testing.ts"
export * as Worker from "./Worker.ts"
export * as Periodic from "./Periodic.ts"
export * as PgSchema from "./PgSchema.ts"
export * as Bundle from "./Bundle.ts"
