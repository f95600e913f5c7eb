// Package asynctest is the test kit for code built on async: it runs a
// whole fleet (Redis, a client, a coordinator and workers) inside one go
// test, runs a handler alone with a task's context, records what was
// enqueued for assertions, moves Redis' clock, and injects failures.
//
// (The package documentation is completed with the kit; see README
// "Testing your code".)
package asynctest
