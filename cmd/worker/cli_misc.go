package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"time"
)

var cmdHealthcheck = &command{
	name: "healthcheck", offline: true, plain: true,
	summary: "exit 0 if this container's worker answers on HTTP_ADDR, else 1 (for HEALTHCHECK; no curl needed)",
	about: `It GETs /healthz (with -ready, /readyz) of the worker's own -http address on
the loopback interface: ":8080" and "0.0.0.0:8080" are asked at 127.0.0.1:8080.
With -tls-cert (TLS_CERT_FILE, as the worker has it) it asks over HTTPS and
trusts that certificate: when its names do not cover the address asked, the
worker must present exactly that certificate.`,
	setup: func(e *cliEnv) func(context.Context, []string) error {
		addr := e.fs.String("http", e.getenv("HTTP_ADDR"), "the worker's HTTP `ADDR` (env HTTP_ADDR)")
		certFile := e.fs.String("tls-cert", e.getenv("TLS_CERT_FILE"), "the worker serves -http over TLS with the certificate (chain) in the PEM `FILE`: ask over HTTPS, trusting it (env TLS_CERT_FILE)")
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
			url, err := healthURL(*addr, path, *certFile != "")
			if err != nil {
				return usage("-http %q: %v", *addr, err)
			}
			tr := &http.Transport{DisableKeepAlives: true}
			if *certFile != "" {
				if tr.TLSClientConfig, err = healthTLS(*certFile, url); err != nil {
					return fmt.Errorf("healthcheck: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			// No proxy from the environment, no connection kept.
			hc := &http.Client{Transport: tr}
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
// the loopback interface when addr listens on every interface; https when
// the server serves TLS.
func healthURL(addr, path string, overTLS bool) (string, error) {
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
	scheme := "http://"
	if overTLS {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, port) + path, nil
}

// healthTLS is the TLS configuration with which the healthcheck asks the
// worker at rawURL, whose -tls-cert is certFile: that file (the server's
// certificate, then its chain) is the only root trusted. When the
// certificate names the host asked (or, asked on a loopback address, names
// "localhost"), the handshake verifies it as usual. When it does not (a
// certificate for the service's public name, asked at 127.0.0.1), the name
// is not checked; instead the worker must present the very certificate of
// the file, and it must be valid now for serving TLS.
func healthTLS(certFile, rawURL string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert: %w", err)
	}
	var certs []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert %s: %w", certFile, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("-tls-cert %s: no PEM certificate in it", certFile)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c)
	}
	leaf := certs[0]
	host := u.Hostname()
	names := []string{host}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		names = append(names, "localhost")
	}
	for _, n := range names {
		if leaf.VerifyHostname(n) == nil {
			return &tls.Config{RootCAs: roots, ServerName: n, MinVersion: tls.VersionTLS12}, nil
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The name is not checked (the certificate does not name the
		// address asked); VerifyConnection checks the rest.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !cs.PeerCertificates[0].Equal(leaf) {
				return fmt.Errorf("the server at %s does not present the certificate of -tls-cert %s", host, certFile)
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}, nil
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
