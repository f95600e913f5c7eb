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
package httpapi
