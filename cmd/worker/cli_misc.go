package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"time"
)

var cmdHealthcheck = &command{
	name: "healthcheck", offline: true, plain: true,
	summary: "exit 0 if this container's worker answers on HTTP_ADDR, else 1 (for HEALTHCHECK; no curl needed)",
	about: `It GETs /healthz (with -ready, /readyz) of the worker's own -http address on
the loopback interface: ":8080" and "0.0.0.0:8080" are asked at 127.0.0.1:8080.`,
	setup: func(e *cliEnv) func(context.Context, []string) error {
		addr := e.fs.String("http", e.getenv("HTTP_ADDR"), "the worker's HTTP `ADDR` (env HTTP_ADDR)")
		ready := e.fs.Bool("ready", false, "ask /readyz (started, not draining, Redis answers) instead of /healthz")
		timeout := e.fs.Duration("timeout", 3*time.Second, "give up after `DURATION`")
		return func(ctx context.Context, _ []string) error {
			if *addr == "" {
				return usage("no address: set -http or HTTP_ADDR")
			}
			path := "/healthz"
			if *ready {
				path = "/readyz"
			}
			url, err := healthURL(*addr, path)
			if err != nil {
				return usage("-http %q: %v", *addr, err)
			}
			ctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			// No proxy from the environment, no connection kept.
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: GET %s: %s: %s", url, resp.Status, oneLine(string(body), 200))
			}
			return nil
		}
	},
}

// healthURL is the URL of path on the server listening on addr, asked on
// the loopback interface when addr listens on every interface.
func healthURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

var cmdVersion = &command{
	name: "version", offline: true,
	summary: "the module version and the VCS revision it was built from",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(context.Context, []string) error {
			v := buildVersion()
			return e.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s %s\n", v.Module, v.Version)
				if v.Revision != "" {
					dirty := ""
					if v.Modified {
						dirty = " (modified)"
					}
					fmt.Fprintf(w, "revision %s%s %s\n", v.Revision, dirty, v.Time)
				}
				fmt.Fprintf(w, "%s\n", v.Go)
			})
		}
	},
}

// version is what `worker version` prints.
type version struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Revision string `json:"vcs_revision,omitempty"`
	Time     string `json:"vcs_time,omitempty"`
	Modified bool   `json:"vcs_modified,omitempty"`
	Go       string `json:"go"`
}

func buildVersion() version { return versionOf(debug.ReadBuildInfo()) }

func versionOf(bi *debug.BuildInfo, ok bool) version {
	if !ok {
		return version{Module: "github.com/taskfleet/async", Version: "unknown"}
	}
	v := version{Module: bi.Main.Path, Version: bi.Main.Version, Go: bi.GoVersion}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}
