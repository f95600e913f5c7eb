// Package dashboard is the fleet's web dashboard: an http.Handler built on
// package inspect, served by `worker dashboard` and, with -ui, at /ui on a
// worker's HTTP_ADDR.
//
// Pages (server-rendered HTML, html/template's contextual escaping for
// every value read from Redis):
//
//   - overview: every queue's counts by state, paused or not, processed
//     and failed per minute over the last hour (an inline SVG chart), and
//     the handler latency percentiles of this process when a metrics
//     source is given (Options.Metrics);
//   - queue: the queue's tasks in one state, a page at a time (the
//     inspector's cursors), a kind filter (bounded: it reads at most
//     kindScan tasks per page), a lookup by id; actions: pause, resume,
//     retry-all and purge-all dead, delete the queue; per task: cancel,
//     retry and purge a dead one;
//   - task: one task in any state with its attempts, args and result as
//     JSON, parent, children, continuations, group and why it waits;
//   - groups with progress bars; a group with its members by state (up to
//     1000 members) and its join;
//   - repeats, workers, and throttles (fleet-wide limits: slots in use and
//     parked tasks; rate buckets: when each is full again).
//
// Each page polls a JSON twin (its path under /api/) at most once a second
// (every 2 s; paused while the tab is hidden) and replaces the parts of the
// page that changed. The JSON carries the page's data and those parts,
// rendered by the same templates.
//
// Safety: every action is a POST; one the browser marks as coming from
// another origin (Sec-Fetch-Site, or else Origin: a page on another port of
// the same host too) is refused with 403, and the others need a CSRF token
// (a random value per browser in a SameSite=Strict, HttpOnly cookie; the
// hidden form field holds its HMAC under a random key of the process, so a
// cookie planted by another site does not come with a valid token; compared
// in constant time). An action answers with a redirect (POST,
// redirect, GET) and a one-time flash message; in read-only mode the
// buttons are not rendered and a POST is refused with 403. Access needs a
// bearer token (Options.Token: an Authorization header, or ?token= once,
// which sets an HttpOnly cookie) or basic auth (Options.User, Password);
// with neither, New refuses any listen address but a loopback one, and the
// handler answers only requests whose Host is loopback (against DNS
// rebinding). Every
// response carries a Content-Security-Policy without inline script,
// X-Content-Type-Options, frame-ancestors 'none' and a Referrer-Policy. The
// Redis URL's password never reaches a page: the caller gives a redacted
// description (Options.Target) and a scrubber for errors (Options.Scrub).
//
// The HTML, CSS and JavaScript are embedded (go:embed): no CDN, no build
// step.
package dashboard
