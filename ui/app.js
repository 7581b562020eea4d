// The effect-jobs dashboard: one hand-written ES module, no framework, no build step.
// It reads and changes jobs through the dashboard's JSON API (api/, relative to <base>),
// builds the DOM with textContent only (job data is never parsed as HTML), draws its charts
// as inline SVG, and routes on the URL's hash: #/ (overview: charts and queues),
// #/jobs?state=&queue=&name=&q=&cursor= (list), #/jobs/<id> (one job), #/running, #/dead,
// #/periodic, #/bundles, #/workers. A bearer token given as #token=<token> is kept in
// sessionStorage. Live pages refresh by short polling (POLL_MS), paused while the tab is hidden.

const STATES = ["scheduled", "available", "running", "completed", "dead", "cancelled"]
const POLL_MS = 2000
/** The charts refresh every CHART_EVERY polls (their query reads an hour of outcomes). */
const CHART_EVERY = 5
const MINUTE = 60_000

const main = document.getElementById("main")
const statusLine = document.getElementById("status")
let config = { readOnly: true, auth: "none", hiddenQueues: [] }
let timer = undefined
let renderId = 0

// -- helpers ------------------------------------------------------------------------------

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v === true ? "" : String(v))
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/** An element: h("a", { href: "#/" }, "text", child). Strings become text nodes. */
function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children)
}

/** An SVG element, as `h`. */
function svg(tag, attrs, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children)
}

function token() {
  return sessionStorage.getItem("effect-jobs-token")
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`)
    this.status = status
    this.tag = body?._tag
  }
}

async function api(method, path) {
  const headers = { accept: "application/json" }
  const t = token()
  if (t) headers.authorization = `Bearer ${t}`
  const res = await fetch(`api/${path}`, { method, headers, credentials: "same-origin" })
  if (res.status === 204) return undefined
  const body = await res.json().catch(() => undefined)
  if (!res.ok) throw new ApiError(res.status, body)
  return body
}

function time(iso) {
  if (!iso) return ""
  const d = new Date(iso)
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" })
}

/** "in 4 min", "1 h 38 min ago": how far `iso` is from now. */
function relative(iso) {
  const ms = Date.parse(iso) - Date.now()
  const abs = Math.abs(ms)
  const min = Math.floor(abs / MINUTE)
  const text = abs < MINUTE ? `${Math.floor(abs / 1000)} s`
    : min < 60 ? `${min} min`
    : min < 1440 ? `${Math.floor(min / 60)} h ${min % 60} min`
    : `${Math.floor(min / 1440)} d ${Math.floor((min % 1440) / 60)} h`
  return ms >= 0 ? `in ${text}` : `${text} ago`
}

function say(text, kind = "info") {
  statusLine.textContent = text
  statusLine.className = kind
}

function stateBadge(state) {
  return h("span", { class: `state ${state}` }, state)
}

/** A button that runs `action`, says what happened, and re-renders. */
function actionButton(label, action, attrs = {}) {
  return h("button", {
    ...attrs,
    type: "button",
    disabled: config.readOnly || attrs.disabled || undefined,
    title: config.readOnly ? "the dashboard is read-only" : attrs.title,
    onclick: async (event) => {
      event.target.disabled = true
      try {
        const message = await action()
        say(message ?? `${label}: done`, "ok")
      } catch (e) {
        say(`${label}: ${e.message}`, "error")
      }
      render()
    }
  }, label)
}

function retryButton(j) {
  return actionButton("Retry", async () => {
    await api("POST", `jobs/${j.id}/retry`)
    return `job ${j.id} is available again`
  }, { class: "retry", "data-id": j.id })
}

function cancelButton(j) {
  return actionButton(j.cancelRequestedAt ? "Cancelling…" : "Cancel", async () => {
    const { outcome } = await api("POST", `jobs/${j.id}/cancel`)
    return outcome === "cancelled" ? `job ${j.id} cancelled` : `job ${j.id}: its worker is asked to stop it`
  }, { class: "cancel", "data-id": j.id, disabled: Boolean(j.cancelRequestedAt) })
}

function redriveButton(q) {
  return actionButton(`Retry ${q.counts.dead} dead`, async () => {
    const { retried } = await api("POST", `queues/${encodeURIComponent(q.name)}/retry-dead`)
    return `${retried} dead jobs of ${q.name} are available again`
  }, { class: "redrive", "data-queue": q.name })
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/"
  const [path, query = ""] = raw.split("?")
  return { path, params: new URLSearchParams(query) }
}

/**
 * Runs `fn` every POLL_MS while the page it was started for is shown; skipped while the tab
 * is hidden. A failed refresh is said on the status line and the next one is tried.
 */
function poll(fn) {
  clearTimeout(timer)
  const id = renderId
  timer = setTimeout(async () => {
    if (id !== renderId) return
    if (!document.hidden) {
      try {
        await fn()
      } catch (e) {
        if (id === renderId) say(`refresh failed: ${e.message}`, "error")
      }
    }
    if (id === renderId) poll(fn)
  }, POLL_MS)
}

const queueLink = (name) => h("a", { href: `#/jobs?queue=${encodeURIComponent(name)}` }, name)
const jobLink = (id) => h("a", { href: `#/jobs/${id}` }, id)
const table = (cls, columns, rows, empty) =>
  h(
    "table",
    { class: cls },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)))
  )

// -- charts -------------------------------------------------------------------------------

/**
 * One bucket per minute of the last `minutes`, the last one the current minute, from the
 * (sparse) rows of api/throughput: minutes without a row are zeros, rows of several queues
 * in one minute are added up.
 */
function minuteBuckets(rows, minutes) {
  const latest = rows.reduce((t, r) => Math.max(t, Date.parse(r.at) || 0), 0)
  const end = Math.floor(Math.max(Date.now(), latest) / MINUTE) * MINUTE
  const start = end - (minutes - 1) * MINUTE
  const buckets = Array.from({ length: minutes }, (_, i) => ({ at: start + i * MINUTE, completed: 0, retried: 0, dead: 0, cancelled: 0 }))
  for (const r of rows) {
    const i = Math.round((Date.parse(r.at) - start) / MINUTE)
    if (!(i >= 0 && i < minutes)) continue
    for (const k of ["completed", "retried", "dead", "cancelled"]) buckets[i][k] += Number(r[k]) || 0
  }
  return buckets
}

const clock = (t) => new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })

/** A bar chart, one bar per bucket, `series` stacked: [{ key, label }]. */
function barChart(name, title, buckets, series) {
  const W = 600, H = 150, left = 34, bottom = 18, top = 6
  const plotW = W - left - 4, plotH = H - top - bottom
  const sum = (b) => series.reduce((n, s) => n + b[s.key], 0)
  const max = Math.max(1, ...buckets.map(sum))
  const barW = plotW / buckets.length
  const y = (v) => top + plotH - (v / max) * plotH
  const totals = Object.fromEntries(series.map((s) => [s.key, buckets.reduce((n, b) => n + b[s.key], 0)]))
  const total = Object.values(totals).reduce((a, b) => a + b, 0)
  const bars = buckets.map((b, i) => {
    let base = 0
    return svg(
      "g",
      { class: "bucket", "data-at": new Date(b.at).toISOString(), "data-value": sum(b) },
      svg("title", {}, `${clock(b.at)}: ${series.map((s) => `${b[s.key]} ${s.label}`).join(", ")}`),
      series.map((s) => {
        const v = b[s.key]
        if (v === 0) return undefined
        const rect = svg("rect", { class: `bar ${s.key}`, x: (left + i * barW + 0.5).toFixed(1), y: y(base + v).toFixed(1), width: Math.max(1, barW - 1).toFixed(1), height: (y(base) - y(base + v)).toFixed(1) })
        base += v
        return rect
      })
    )
  })
  const label = (x, yy, text, anchor) => svg("text", { x, y: yy, "text-anchor": anchor }, text)
  return h(
    "figure",
    { class: "chart", "data-chart": name },
    h("figcaption", {}, title, " ", series.map((s) => h("span", { class: `legend ${s.key}` }, `${s.label} ${totals[s.key]}`))),
    svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${total} in the last ${buckets.length} minutes`, "data-total": total, "data-buckets": buckets.length },
      svg("line", { class: "axis", x1: left, x2: W - 4, y1: top + plotH, y2: top + plotH }),
      svg("line", { class: "grid", x1: left, x2: W - 4, y1: top, y2: top }),
      label(left - 4, top + 8, String(max), "end"),
      label(left - 4, top + plotH, "0", "end"),
      label(left, H - 4, clock(buckets[0].at), "start"),
      label(left + plotW / 2, H - 4, clock(buckets[Math.floor(buckets.length / 2)].at), "middle"),
      label(W - 4, H - 4, clock(buckets.at(-1).at), "end"),
      bars
    )
  )
}

/** The throughput and failure charts of the last hour into `box`; "no data" without the endpoint. */
async function drawCharts(box, queue) {
  const minutes = 60
  let rows
  try {
    const query = new URLSearchParams({ minutes: String(minutes) })
    if (queue) query.set("queue", queue)
    rows = (await api("GET", `throughput?${query}`)).minutes ?? []
  } catch (e) {
    // 404: a server without the endpoint. Either way the rest of the page still works.
    const why = e.status === 404 ? "this server has no throughput endpoint (api/throughput)" : e.message
    box.replaceChildren(h("p", { class: "no-data" }, `no data: ${why}`))
    return
  }
  const buckets = minuteBuckets(rows, minutes)
  box.replaceChildren(
    h(
      "div",
      { class: "chart-row" },
      barChart("throughput", "Completed per minute", buckets, [{ key: "completed", label: "completed" }]),
      barChart("failures", "Failures per minute", buckets, [{ key: "retried", label: "retried" }, { key: "dead", label: "dead" }])
    ),
    h("p", { class: "hint" }, `${buckets.reduce((n, b) => n + b.cancelled, 0)} cancelled in the last hour.`)
  )
}

// -- pages ----------------------------------------------------------------------------------

async function overview(params) {
  const queue = params.get("queue") ?? ""
  const charts = h("div", { class: "charts" })
  const queuesTable = h("table", { class: "queues" })
  const picker = h("select", { "aria-label": "queue of the charts", onchange: (e) => (location.hash = e.target.value ? `#/?queue=${encodeURIComponent(e.target.value)}` : "#/") })
  let tick = 0
  const draw = async () => {
    const [{ queues }] = await Promise.all([
      api("GET", "queues"),
      tick++ % CHART_EVERY === 0 ? drawCharts(charts, queue) : undefined
    ])
    picker.replaceChildren(
      h("option", { value: "" }, "all queues"),
      queues.map((q) => h("option", { value: q.name, selected: q.name === queue }, q.name))
    )
    queuesTable.replaceChildren(
      h("thead", {}, h("tr", {}, h("th", {}, "queue"), STATES.map((s) => h("th", { class: "num" }, s)), h("th", {}, ""))),
      h(
        "tbody",
        {},
        queues.length === 0
          ? h("tr", {}, h("td", { colspan: STATES.length + 2 }, "No queues yet: enqueue a job."))
          : queues.map((q) =>
            h(
              "tr",
              { "data-queue": q.name },
              h("td", {}, queueLink(q.name), q.paused ? h("span", { class: "paused" }, "paused") : ""),
              STATES.map((s) =>
                h(
                  "td",
                  { class: `num count ${s}`, "data-state": s },
                  h("a", { href: `#/jobs?queue=${encodeURIComponent(q.name)}&state=${s}` }, String(q.counts[s]))
                )
              ),
              h(
                "td",
                { class: "actions" },
                q.paused
                  ? actionButton("Resume", async () => {
                    await api("POST", `queues/${encodeURIComponent(q.name)}/resume`)
                    return `${q.name} resumed`
                  })
                  : actionButton("Pause", async () => {
                    await api("POST", `queues/${encodeURIComponent(q.name)}/pause`)
                    return `${q.name} paused: workers stop claiming its jobs`
                  }),
                q.counts.dead > 0 ? redriveButton(q) : ""
              )
            )
          )
      )
    )
  }
  await draw()
  main.replaceChildren(
    h("h1", {}, "Overview"),
    h("div", { class: "chart-head" }, h("h2", {}, "The last hour"), picker),
    charts,
    h("h2", {}, "Queues"),
    queuesTable,
    h("p", { class: "hint" }, `Counts refresh every ${POLL_MS / 1000} s, the charts every ${(POLL_MS * CHART_EVERY) / 1000} s.`)
  )
  poll(draw)
}

async function jobList(params) {
  const filters = ["state", "queue", "name", "q"]
  const query = new URLSearchParams()
  for (const f of [...filters, "cursor"]) if (params.get(f)) query.set(f, params.get(f))
  query.set("limit", "50")
  const page = await api("GET", `jobs?${query}`)
  const go = (p) => (location.hash = `#/jobs?${p}`)

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault()
        const data = new FormData(event.target)
        const p = new URLSearchParams()
        for (const f of filters) if (data.get(f)) p.set(f, String(data.get(f)))
        go(p)
      }
    },
    h(
      "select",
      { name: "state", "aria-label": "state" },
      h("option", { value: "" }, "any state"),
      STATES.map((s) => h("option", { value: s, selected: params.get("state") === s }, s))
    ),
    h("input", { name: "queue", placeholder: "queue", value: params.get("queue") ?? "" }),
    h("input", { name: "name", placeholder: "job name", value: params.get("name") ?? "" }),
    h("input", { name: "q", placeholder: "id or unique key", value: params.get("q") ?? "" }),
    h("button", { type: "submit" }, "Filter")
  )

  // Bulk actions: the selected jobs, one request each (the API's single-job calls, so each
  // gets the same checks and errors as from its own page).
  const selected = new Set()
  const bulk = (label, cls, action) =>
    actionButton(label, async () => {
      const ids = [...selected]
      if (ids.length === 0) return `${label}: select jobs first`
      const failed = []
      for (const id of ids) {
        try {
          await action(id)
        } catch (e) {
          failed.push(`${id} (${e.message})`)
        }
      }
      if (failed.length) throw new Error(`${ids.length - failed.length} of ${ids.length} done; failed: ${failed.join(", ")}`)
      return `${label}: ${ids.length} jobs`
    }, { class: `bulk ${cls}` })
  const bulkBar = h(
    "p",
    { class: "bulk-actions" },
    bulk("Retry selected", "retry", (id) => api("POST", `jobs/${id}/retry`)),
    " ",
    bulk("Cancel selected", "cancel", (id) => api("POST", `jobs/${id}/cancel`)),
    " ",
    bulk("Delete selected", "delete", (id) => api("DELETE", `jobs/${id}`))
  )
  const rows = page.jobs.map((j) =>
    h(
      "tr",
      { "data-id": j.id },
      h("td", {}, h("input", {
        type: "checkbox",
        class: "select",
        "aria-label": `select job ${j.id}`,
        onchange: (event) => (event.target.checked ? selected.add(j.id) : selected.delete(j.id))
      })),
      h("td", {}, jobLink(j.id)),
      h("td", {}, j.name),
      h("td", {}, j.queue),
      h("td", {}, stateBadge(j.state)),
      h("td", { class: "num" }, `${j.attempt}/${j.maxAttempts}`),
      h("td", {}, time(j.state === "scheduled" || j.state === "available" ? j.runAt : j.finalizedAt ?? j.attemptedAt ?? j.createdAt)),
      h("td", { class: "error" }, j.errors.at(-1)?.message ?? "")
    )
  )
  main.replaceChildren(
    h("h1", {}, "Jobs"),
    form,
    bulkBar,
    table("jobs", ["", "id", "name", "queue", "state", "attempt", "time", "last error"], rows, "No jobs match."),
    pager("#/jobs", params, page.next)
  )
}

/** Links to the first page and the next one of a keyset-paged list. */
function pager(path, params, next) {
  const first = new URLSearchParams(params)
  first.delete("cursor")
  const following = new URLSearchParams(params)
  if (next) following.set("cursor", next)
  return h(
    "p",
    { class: "pager" },
    params.get("cursor") ? h("a", { href: `${path}?${first}` }, "« first page") : "",
    next ? h("a", { href: `${path}?${following}`, rel: "next" }, "next page »") : ""
  )
}

function json(value) {
  return h("pre", { class: "json" }, value === null || value === undefined ? "—" : JSON.stringify(value, null, 2))
}

async function jobPage(id) {
  const draw = async () => {
    const j = await api("GET", `jobs/${encodeURIComponent(id)}`)
    const waiting = j.state === "scheduled" || j.state === "available"
    const actions = [
      j.state === "dead" || j.state === "cancelled"
        ? actionButton("Retry", async () => {
          await api("POST", `jobs/${j.id}/retry`)
          return `job ${j.id} is available again`
        }, { id: "retry" })
        : "",
      waiting || j.state === "running"
        ? actionButton("Cancel", async () => {
          const { outcome } = await api("POST", `jobs/${j.id}/cancel`)
          return outcome === "cancelled" ? `job ${j.id} cancelled` : `job ${j.id}: its worker is asked to stop it`
        }, { id: "cancel" })
        : "",
      j.state !== "running"
        ? actionButton("Delete", async () => {
          if (!confirm(`Delete job ${j.id}? This cannot be undone.`)) return "not deleted"
          await api("DELETE", `jobs/${j.id}`)
          location.hash = "#/jobs"
          return `job ${j.id} deleted`
        }, { id: "delete", class: "danger" })
        : ""
    ]
    const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")]
    main.replaceChildren(
      h("h1", {}, `Job ${j.id} `, stateBadge(j.state)),
      h("p", { class: "actions" }, actions),
      h(
        "dl",
        { class: "fields" },
        field("name", j.name),
        field("queue", queueLink(j.queue)),
        field("attempt", `${j.attempt} of ${j.maxAttempts}`),
        field("priority", String(j.priority)),
        field("unique key", j.uniqueKey),
        j.uniqueWindow ? field("unique window from", time(j.uniqueWindow)) : [],
        j.uniqueStates ? field("unique while", j.uniqueStates.join(", ")) : [],
        j.group ? field("group", j.group) : [],
        field("request id", j.requestId),
        field("created", time(j.createdAt)),
        field(waiting ? "runs at" : "run at", time(j.runAt)),
        field("last attempt", time(j.attemptedAt)),
        field("finished", time(j.finalizedAt)),
        field("pruned at", time(j.pruneAt)),
        j.lockedBy ? field("worker", `${j.lockedBy} (lease until ${time(j.leaseExpiresAt)})`) : "",
        j.buffered ? field("buffered", "claimed ahead, waiting in the worker's buffer for a free slot") : "",
        j.cancelRequestedAt ? field("cancel requested", time(j.cancelRequestedAt)) : ""
      ),
      h("h2", {}, "Arguments"),
      j.argsHidden ? h("p", { class: "hidden-args" }, "Hidden: this queue's arguments and results are not shown.") : json(j.args),
      h("h2", {}, "Result"),
      j.argsHidden ? h("p", { class: "hidden-args" }, "Hidden.") : json(j.result),
      h("h2", {}, "Errors"),
      j.errors.length === 0
        ? h("p", {}, "None.")
        : table("errors", ["attempt", "at", "kind", "message"], j.errors.map((e) =>
          h("tr", {}, h("td", { class: "num" }, String(e.attempt)), h("td", {}, time(e.at)), h("td", {}, e.kind), h("td", {}, h("pre", {}, e.message)))
        ), ""),
      h("h2", {}, "Metadata"),
      json(Object.keys(j.metadata).length ? j.metadata : null)
    )
    return j
  }
  const j = await draw()
  if (!["completed", "dead", "cancelled"].includes(j.state)) poll(draw)
}

/** A live page: `draw` fills the page's body and is re-run by polling. */
async function livePage(title, draw) {
  const body = h("div", {})
  const redraw = async () => body.replaceChildren(...[await draw()].flat())
  await redraw()
  main.replaceChildren(h("h1", {}, title), body)
  poll(redraw)
}

function running() {
  return livePage("Running", async () => {
    const { jobs } = await api("GET", "jobs?state=running&limit=200")
    return [
      table("running", ["id", "name", "queue", "worker", "started", "lease until", ""], jobs.map((j) =>
        h(
          "tr",
          { "data-id": j.id },
          h("td", {}, jobLink(j.id)),
          h("td", {}, j.name),
          h("td", {}, j.queue),
          h("td", {}, j.lockedBy ?? ""),
          h("td", {}, j.buffered ? "buffered (not started)" : j.attemptedAt ? `${time(j.attemptedAt)} (${relative(j.attemptedAt)})` : ""),
          h("td", {}, time(j.leaseExpiresAt)),
          h("td", { class: "actions" }, cancelButton(j))
        )
      ), "No job is running."),
      jobs.length === 200 ? h("p", { class: "hint" }, h("a", { href: "#/jobs?state=running" }, "More in the job list »")) : ""
    ]
  })
}

function dead(params) {
  const queue = params.get("queue") ?? ""
  return livePage("Dead jobs", async () => {
    const query = new URLSearchParams({ state: "dead", limit: "50" })
    if (queue) query.set("queue", queue)
    if (params.get("cursor")) query.set("cursor", params.get("cursor"))
    const [page, { queues }] = await Promise.all([api("GET", `jobs?${query}`), api("GET", "queues")])
    const withDead = queues.filter((q) => q.counts.dead > 0 && (!queue || q.name === queue))
    return [
      h(
        "div",
        { class: "redrive-bar" },
        withDead.length === 0 ? h("span", { class: "hint" }, "No dead jobs.") : withDead.map((q) =>
          h("span", { class: "redrive-queue", "data-queue": q.name }, h("a", { href: `#/dead?queue=${encodeURIComponent(q.name)}` }, q.name), " ", redriveButton(q))
        ),
        queue ? h("a", { href: "#/dead" }, "all queues") : ""
      ),
      table("dead", ["id", "name", "queue", "attempts", "died", "last error", ""], page.jobs.map((j) =>
        h(
          "tr",
          { "data-id": j.id },
          h("td", {}, jobLink(j.id)),
          h("td", {}, j.name),
          h("td", {}, j.queue),
          h("td", { class: "num" }, `${j.attempt}/${j.maxAttempts}`),
          h("td", {}, time(j.finalizedAt)),
          h("td", { class: "error" }, j.errors.at(-1)?.message ?? ""),
          h("td", { class: "actions" }, retryButton(j))
        )
      ), "No dead jobs."),
      pager("#/dead", params, page.next)
    ]
  })
}

function periodic() {
  return livePage("Periodic", async () => {
    const { schedules } = await api("GET", "periodic")
    return [
      table("periodic", ["schedule", "job", "when", "last slot", "last job", "next slots"], schedules.map((s) =>
        h(
          "tr",
          { "data-schedule": s.name },
          h("td", {}, s.name, s.overdueSince ? h("span", { class: "overdue", title: "no scheduler enqueued this slot" }, `overdue since ${time(s.overdueSince)}`) : ""),
          h("td", {}, s.job ?? "—", s.queue ? [" on ", queueLink(s.queue)] : ""),
          h("td", {}, s.schedule ?? "unknown (registered by an older version)"),
          h("td", {}, time(s.lastSlot)),
          h("td", {}, s.lastJobId ? [jobLink(s.lastJobId), " ", s.lastJobState ? stateBadge(s.lastJobState) : "(deleted)"] : "—"),
          h("td", { class: "next" }, s.nextSlots.length === 0 ? "—" : s.nextSlots.map((t, i) => h("div", { "data-at": t }, time(t), i === 0 ? ` (${relative(t)})` : "")))
        )
      ), "No periodic schedule: none registered in this schema (Periodic.layer)."),
      h("p", { class: "hint" }, "Next slots come from the definition each scheduler stores when it starts.")
    ]
  })
}

function bundles(params) {
  return livePage("Bundles", async () => {
    const query = new URLSearchParams({ limit: "50" })
    for (const f of ["state", "cursor"]) if (params.get(f)) query.set(f, params.get(f))
    const page = await api("GET", `bundles?${query}`)
    const filter = (state, label) =>
      h("a", { href: state ? `#/bundles?state=${state}` : "#/bundles", "aria-current": (params.get("state") ?? "") === state ? "page" : undefined }, label)
    return [
      h("p", { class: "filters" }, filter("", "all"), filter("open", "open"), filter("finished", "finished")),
      table("bundles", ["id", "kind", "progress", "created", "finished", "finish step"], page.bundles.map((b) =>
        h(
          "tr",
          { "data-bundle": b.id },
          h("td", {}, b.id),
          h("td", {}, b.name),
          h("td", { class: "progress" }, h("progress", { max: b.total, value: b.done }), ` ${b.done} / ${b.total}`),
          h("td", {}, time(b.createdAt)),
          h("td", {}, time(b.finishedAt)),
          h("td", {}, b.finishStepDone ? ["done", b.followUpId ? [", follow-up ", jobLink(b.followUpId)] : ""] : b.done === b.total ? "pending" : "")
        )
      ), "No bundles."),
      pager("#/bundles", params, page.next)
    ]
  })
}

function workers() {
  return livePage("Workers", async () => {
    const { workers } = await api("GET", "workers")
    return table("workers", ["worker", "queues", "concurrency", "jobs held", "started", "last seen"], workers.map((w) =>
      h(
        "tr",
        { "data-worker": w.id },
        h("td", {}, w.id),
        h("td", {}, w.queues.join(", ")),
        h("td", { class: "num" }, String(w.concurrency)),
        h("td", { class: "num" }, String(w.jobsHeld)),
        h("td", {}, time(w.startedAt)),
        h("td", {}, time(w.lastSeenAt))
      )
    ), "No live worker (a worker with listen: false does not register).")
  })
}

function tokenForm(message) {
  main.replaceChildren(
    h("h1", {}, "Sign in"),
    h("p", {}, message),
    h(
      "form",
      {
        onsubmit: (event) => {
          event.preventDefault()
          sessionStorage.setItem("effect-jobs-token", String(new FormData(event.target).get("token")))
          start()
        }
      },
      h("input", { name: "token", type: "password", placeholder: "token", autocomplete: "current-password", required: true }),
      h("button", { type: "submit" }, "Open")
    )
  )
}

// -- routing --------------------------------------------------------------------------------

const pages = {
  "/": overview,
  "/jobs": jobList,
  "/running": running,
  "/dead": dead,
  "/periodic": periodic,
  "/bundles": bundles,
  "/workers": workers
}

async function render() {
  renderId++
  clearTimeout(timer)
  const { path, params } = parseHash()
  const page = pages[path === "" ? "/" : path]
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.getAttribute("href") === `#${path === "" ? "/" : path}`) a.setAttribute("aria-current", "page")
    else a.removeAttribute("aria-current")
  }
  try {
    if (page) await page(params)
    else if (path.startsWith("/jobs/")) await jobPage(decodeURIComponent(path.slice("/jobs/".length)))
    else main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview")))
  } catch (e) {
    if (e.status === 401) return tokenForm(e.message)
    main.replaceChildren(h("h1", {}, "Error"), h("p", { class: "error" }, e.message))
  }
}

async function start() {
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem("effect-jobs-token", decodeURIComponent(location.hash.slice("#token=".length)))
    history.replaceState(null, "", location.pathname + location.search + "#/")
  }
  try {
    config = await api("GET", "config")
  } catch (e) {
    if (e.status === 401) return tokenForm(e.message)
    main.replaceChildren(h("h1", {}, "Error"), h("p", { class: "error" }, e.message))
    return
  }
  document.getElementById("mode").textContent = config.readOnly ? "read-only" : ""
  await render()
}

addEventListener("hashchange", () => {
  say("")
  if (location.hash.startsWith("#token=")) start()
  else render()
})
start()
