/**
 * Bundles: jobs of several kinds enqueued together (atomically), and a finish step
 * that runs exactly once, when every member has ended (whatever the outcome), and
 * computes a follow-up job from the members' results.
 */
import { Console, Deferred, Effect, Layer, Schema } from "effect"
import { Bundle, Job, Jobs, Observer, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"

const Thumbnail = Job.make("make-thumbnail", {
  args: Schema.Struct({ photo: Schema.String }),
  success: Schema.Struct({ bytes: Schema.Number }),
  queue: "media",
  retention: 0 // deleted once done, but bundle members are kept until the finish step has read them
})
const Transcode = Job.make("transcode-video", {
  args: Schema.Struct({ video: Schema.String }),
  success: Schema.Struct({ seconds: Schema.Number }),
  queue: "media"
})
const PublishAlbum = Job.make("publish-album", {
  args: Schema.Struct({ album: Schema.String, bytes: Schema.Number, seconds: Schema.Number, failed: Schema.Number }),
  queue: "publish"
})
const AlbumUpload = Bundle.make("album-upload")

const Handlers = Layer.mergeAll(
  Job.toLayer(Thumbnail, ({ photo }) => Effect.as(Console.log(`  thumbnail of ${photo}`), { bytes: photo.length * 1000 })),
  Job.toLayer(Transcode, ({ video }) => video.endsWith(".bad") ? Job.discard(`cannot read ${video}`) : Effect.succeed({ seconds: 42 })),
  Job.toLayer(PublishAlbum, (a) => Console.log(`  publishing "${a.album}": ${a.bytes} bytes, ${a.seconds} s of video, ${a.failed} failed`))
)

// The finish step reads every member's outcome (the result as stored: decode it with the
// job's Schema) and returns the follow-up job, which it enqueues in the same transaction.
const AlbumFinish = Bundle.toLayer(AlbumUpload, (finished) =>
  Effect.gen(function*() {
    const { album } = yield* Schema.decodeUnknownEffect(Schema.Struct({ album: Schema.String }))(finished.metadata)
    let bytes = 0, seconds = 0
    for (const m of finished.members.filter((m) => m.state === "completed")) {
      if (m.name === Thumbnail.name) bytes += (yield* Thumbnail.decodeResult(m.result)).bytes
      if (m.name === Transcode.name) seconds += (yield* Transcode.decodeResult(m.result)).seconds
    }
    return Jobs.entry(PublishAlbum, { album, bytes, seconds, failed: finished.total - (finished.counts.completed ?? 0) })
  }))

const program = Effect.gen(function*() {
  const done = yield* Deferred.make<Observer.BundleInfo>()
  yield* Layer.build(Layer.mergeAll(
    Worker.layer({ queues: { media: { concurrency: 4 }, publish: {} } }).pipe(Layer.provide(Handlers)),
    AlbumFinish.pipe(Layer.provide(Observer.add({ ...Observer.noop, bundleFinished: (b) => Deferred.succeed(done, b) })))
  ))
  const jobs = yield* Jobs.Jobs
  const { bundleId, ids } = yield* jobs.enqueueBundle(AlbumUpload, [
    ...["beach.jpg", "sunset.jpg", "harbour.jpg"].map((photo) => Jobs.entry(Thumbnail, { photo })),
    Jobs.entry(Transcode, { video: "boat.mp4" }),
    Jobs.entry(Transcode, { video: "drone.bad" })
  ], { metadata: { album: "summer" } })
  yield* Console.log(`enqueued bundle ${bundleId}: jobs ${ids.join(", ")}`)

  const info = yield* Deferred.await(done)
  const counts = Object.entries(info.counts).sort().map(([state, n]) => `${state} ${n}`).join(", ")
  yield* Console.log(`bundle ${info.id} finished: ${counts}; follow-up job ${info.followUpId}`)
  yield* jobs.await(PublishAlbum, info.followUpId!, { timeout: "30 seconds" })
  const progress = yield* jobs.bundleProgress(bundleId)
  yield* Console.log(`progress: ${progress.remaining} of ${progress.total} remaining, follow-up ${progress.followUpId}`)
  yield* check(info.counts.completed === 4 && info.counts.dead === 1 && progress.followUpId === info.followUpId, "bundle")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
