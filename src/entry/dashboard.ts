/**
 * effect-jobs/dashboard: the web dashboard, a subpath of its own so that an app that
 * only enqueues and runs jobs does not load `effect/http` and `effect/http-api`.
 *
 * ```ts
 * import { Dashboard } from "effect-jobs/dashboard"
 * ```
 *
 * @since 0.1.0
 */
export * as Dashboard from "../Dashboard.ts"
