// Package httpapi is the HTTP/JSON door to a fleet for services not written
// in Go: enqueue tasks (one, or a batch), read a task's state, wait for its
// outcome, cancel it, start a ForkJoin or InvokeAll group and follow it, and
// read the queues' counts. cmd/worker serves it (`worker api`, or the role
// api beside a worker); its OpenAPI 3 document is openapi.json, served at
// GET /v1/openapi.json.
//
// Args arrive as JSON and reach Go handlers as the msgpack that Go structs
// decode, by the rule of codec.FromJSON (docs/wire.md); results go back by
// the inverse rule. Every bad request gets a 4xx with a JSON body
// {"error": "...", "field": "..."} naming what is wrong.
//
// # Authentication
//
// With Config.Tokens set, every route but GET /v1/openapi.json wants
// "Authorization: Bearer <secret>" of one of them (401 with
// WWW-Authenticate: Bearer otherwise). Secrets are compared by their
// SHA-256 in constant time and never logged. A token limited to queues
// gets 403 for any other queue: enqueueing into it, reading, waiting for
// or cancelling its tasks, reading its counts; GET /v1/queues lists only
// its queues. Without tokens the API must listen on a loopback address
// (CheckAddr) and answers only requests whose Host is a loopback name or
// address. Cross-origin browser requests that write are refused (403) in
// both cases: the API has no CORS.
//
// # Limits
//
// A body is bounded by Config.MaxBodyBytes (a batch's and a group's by
// MaxBatchBytes, and their tasks by MaxBatchTasks; over them: 413, naming
// "tasks" when there are too many). A task's args, once msgpack, are
// bounded by Config.MaxPayloadBytes, the client's limit (413 naming
// "args", or "tasks[3].args" in a batch). Names follow the client's
// rules: queue, kind and id are 1 to 128 bytes of A-Z a-z 0-9 . _ -,
// rate_key and partition_key 1 to 256 bytes of those and : /; an id must
// not look like a generated one ("123-4") nor start with "bt-". An outcome
// waits at most Config.MaxWait; a longer ?wait= is cut to it.
//
// # States
//
// States are the client's (client.State): pending, scheduled, waiting,
// running, retrying, succeeded, cancelled, dead. GET /v1/tasks/{id} maps
// the inspector's view to them: its waiting is pending (or waiting, for a
// continuation whose parent has not ended), its held is waiting (behind a
// partition's earlier tasks, or an InvokeAll's free slot) or scheduled or
// retrying (parked by a concurrency limit or a rate; "why" says which),
// and a task it does not know is a 404.
//
// # Redis errors
//
// A write Redis refuses for want of memory (client.ErrRedisFull) is a 503
// with Retry-After: nothing of the refused write was added. Any other
// failure of a write is a 503 saying the tasks may have been added: give
// tasks an "id" to retry safely, since an existing id adds nothing and
// answers duplicate true. A read that fails in Redis is a 503 too. Both
// are logged at warn.
package httpapi
