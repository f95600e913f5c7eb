package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/httpapi"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

func TestParseRoles(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want roles
	}{
		{"worker", roles{worker: true}},
		{"coordinator", roles{coordinator: true}},
		{"both", roles{worker: true, coordinator: true}},
		{"api", roles{api: true}},
		{"worker, api", roles{worker: true, api: true}},
		{"both,api", roles{worker: true, coordinator: true, api: true}},
		{"coordinator,api,", roles{coordinator: true, api: true}},
		{"api,api", roles{api: true}},
	} {
		got, err := parseRoles(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseRoles(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", " , ", "boss", "worker,boss", "api;worker", "API"} {
		if _, err := parseRoles(in); err == nil || !strings.Contains(err.Error(), "-role") {
			t.Errorf("parseRoles(%q): %v, want an error naming -role", in, err)
		}
	}
	if s := (roles{worker: true, coordinator: true, api: true}).String(); s != "worker,coordinator,api" {
		t.Errorf("String: %q", s)
	}
}

// writeFile writes content to a file of its own under t's temporary
// directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The role api's configuration: it needs -http; without a token it takes a
// loopback address only; tokens come from API_TOKENS and API_TOKENS_FILE;
// -tls-cert and -tls-key go together. No error shows a secret.
func TestAPIConfig(t *testing.T) {
	const secret = "s3cr3t-Tok3n-value"
	c, err := parseConfig([]string{"-role", "api", "-http", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil || !c.roles.api || c.roles.worker || c.roles.coordinator || len(c.tokens) != 0 {
		t.Fatalf("role api on loopback without a token: %+v, %v", c, err)
	}
	c, err = parseConfig([]string{"-http", "0.0.0.0:8080"}, env(map[string]string{"ROLE": "worker,api", "API_TOKENS": "ops:" + secret}), io.Discard)
	if err != nil || !c.roles.api || !c.roles.worker || len(c.tokens) != 1 || c.tokens[0].Name != "ops" || c.tokens[0].Secret != secret {
		t.Fatalf("role worker,api with a token on 0.0.0.0: %+v, %v", c, err)
	}
	// Not the role api: the API's variables are not read.
	if _, err := parseConfig([]string{"-http", "0.0.0.0:8080"}, env(map[string]string{"API_TOKENS": "::"}), io.Discard); err != nil {
		t.Fatalf("role both with a bad API_TOKENS: %v", err)
	}

	file := writeFile(t, "tokens", "billing:"+secret+"-2:uploads,mail\n\nreports:"+secret+"-3\n")
	c, err = parseConfig([]string{"-role", "api", "-http", "[::]:8080"}, env(map[string]string{"API_TOKENS_FILE": file, "API_TOKENS": "ops:" + secret}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	names := tokenNames(c.tokens)
	if !slices.Equal(names, []string{"ops", "billing", "reports"}) || !slices.Equal(c.tokens[1].Queues, []string{"uploads", "mail"}) {
		t.Fatalf("tokens from API_TOKENS and API_TOKENS_FILE: %+v", c.tokens)
	}
	if c, err = parseConfig([]string{"-role", "api", "-http", "10.0.0.1:80", "-api-tokens-file", file}, env(nil), io.Discard); err != nil || len(c.tokens) != 2 {
		t.Fatalf("-api-tokens-file: %+v, %v", c, err)
	}

	for _, tc := range []struct {
		args    []string
		env     map[string]string
		want    string
		noToken bool // errors.Is(err, httpapi.ErrNoToken)
	}{
		{args: []string{"-role", "api"}, want: "-http"},
		{args: []string{"-role", "api", "-http", "0.0.0.0:8080"}, noToken: true},
		{args: []string{"-role", "both,api", "-http", ":8080"}, noToken: true},
		{args: []string{"-role", "api", "-http", "10.1.2.3:8080"}, noToken: true},
		{args: []string{"-role", "api", "-http", "example.com:8080"}, noToken: true},
		{args: []string{"-role", "api", "-http", "0.0.0.0:8080"}, env: map[string]string{"API_TOKENS": " ; \n"}, want: "API_TOKENS"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS_FILE": writeFile(t, "empty", "\n\n")}, want: "holds no token"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS_FILE": filepath.Join(t.TempDir(), "none")}, want: "API_TOKENS_FILE"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS": "ops:" + secret, "API_TOKENS_FILE": writeFile(t, "dup", "ops:"+secret+"-b\n")}, want: "ops is in API_TOKENS and in API_TOKENS_FILE"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS": "ops:" + secret, "API_TOKENS_FILE": writeFile(t, "dupsecret", "billing:"+secret+"\n")}, want: "ops and billing have the same secret"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS": "ops:" + secret + ";" + secret}, want: "API_TOKENS"},
		{args: []string{"-role", "api", "-http", "127.0.0.1:0"}, env: map[string]string{"API_TOKENS_FILE": writeFile(t, "bad", "ops:"+secret+"\n"+secret+"\n")}, want: "API_TOKENS_FILE"},
		{args: []string{"-http", "127.0.0.1:0", "-tls-cert", "c.pem"}, want: "go together"},
		{args: []string{"-http", "127.0.0.1:0"}, env: map[string]string{"TLS_KEY_FILE": "k.pem"}, want: "go together"},
		{args: []string{"-tls-cert", "c.pem", "-tls-key", "k.pem"}, want: "-http"},
		{args: []string{"-http", "127.0.0.1:0", "-tls-cert", writeFile(t, "c.pem", "not a cert"), "-tls-key", writeFile(t, "k.pem", "not a key")}, want: "-tls-cert"},
	} {
		_, err := parseConfig(tc.args, env(tc.env), io.Discard)
		switch {
		case err == nil:
			t.Errorf("%v %v: no error", tc.args, tc.env)
		case tc.noToken && !errors.Is(err, httpapi.ErrNoToken):
			t.Errorf("%v %v: %v, want httpapi.ErrNoToken", tc.args, tc.env, err)
		case !tc.noToken && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%v %v: %v, want an error containing %q", tc.args, tc.env, err, tc.want)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%v: the error shows a secret: %v", tc.args, err)
		}
	}

	// The process refuses to start: exit 2, the reason on stderr, no
	// secret anywhere.
	for _, args := range [][]string{
		{"api", "-http", "0.0.0.0:0"},
		{"-role", "worker,api", "-http", "192.0.2.1:8080"},
		{"api", "-role", "worker", "-http", "127.0.0.1:0"}, // worker api has no -role
	} {
		var out, errb syncBuf
		code := runEnv(args, env(map[string]string{"API_TOKENS": " ", "DASHBOARD_TOKEN": ""}), &out, &errb, nil)
		if code != 2 || errb.String() == "" {
			t.Errorf("worker %v: exit %d, want 2\nstdout: %s\nstderr: %s", args, code, out.String(), errb.String())
		}
	}
	var out, errb syncBuf
	if code := runEnv([]string{"api", "-http", "0.0.0.0:0"}, env(map[string]string{"API_TOKENS": "ops:" + secret + ";" + secret}), &out, &errb, nil); code != 2 ||
		strings.Contains(out.String()+errb.String(), secret) || !strings.Contains(errb.String(), "API_TOKENS") {
		t.Errorf("bad API_TOKENS: exit %d, want 2, an error naming API_TOKENS and no secret\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	out, errb = syncBuf{}, syncBuf{}
	if code := runEnv([]string{"api", "-h"}, env(map[string]string{"API_TOKENS": "ops:" + secret}), &out, &errb, nil); code != 0 ||
		!strings.Contains(errb.String(), "usage: worker api") || !strings.Contains(errb.String(), "API_TOKENS_FILE") ||
		strings.Contains(errb.String(), "-role") || strings.Contains(errb.String(), secret) {
		t.Errorf("worker api -h: exit %d\n%s", code, errb.String())
	}
	out, errb = syncBuf{}, syncBuf{}
	if code := runEnv([]string{"-h"}, env(nil), &out, &errb, nil); code != 0 || !strings.Contains(errb.String(), "worker api [flags]") ||
		!strings.Contains(errb.String(), "API_TOKENS_FILE") || !strings.Contains(errb.String(), "-tls-cert") {
		t.Errorf("worker -h: exit %d\n%s", code, errb.String())
	}
}

// apiProcess runs the process with args and getenv until the test ends or
// stopProcess, waits for its /readyz (on base, with hc), and returns its
// logs.
func apiProcess(t *testing.T, args []string, getenv func(string) string, base string, hc *http.Client) *syncBuf {
	logs, _ := apiProcessStop(t, args, getenv, base, hc)
	return logs
}

// apiProcessStop is apiProcess, and returns what stops the process (as
// SIGTERM does) and waits until it exited 0.
func apiProcessStop(t *testing.T, args []string, getenv func(string) string, base string, hc *http.Client) (*syncBuf, func()) {
	t.Helper()
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() { done <- runEnv(args, getenv, &logs, &logs, stop) }()
	var once sync.Once
	stopProcess := func() {
		once.Do(func() {
			close(stop)
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("exit code %d\n%s", code, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Errorf("the process did not stop\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stopProcess)
	testenv.Eventually(t, 15*time.Second, "/readyz", func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("the process exited with %d\n%s", code, logs.String())
		default:
		}
		resp, err := hc.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return &logs, stopProcess
}

// get GETs url with the bearer token (none when empty) and returns the
// status and body.
func get(t *testing.T, hc *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// listsQueue reports whether a GET /v1/queues body lists queue.
func listsQueue(t *testing.T, body, queue string) bool {
	t.Helper()
	var v struct {
		Queues []map[string]any `json:"queues"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET /v1/queues: %v\n%s", err, body)
	}
	for _, q := range v.Queues {
		if q["queue"] == queue {
			return true
		}
	}
	return false
}

// processRedis is the Redis a process of a test talks to, by URL: in the
// cluster pass a miniredis of its own (the process takes one server's URL).
func processRedis(t *testing.T) *testenv.Env {
	if os.Getenv(testenv.EnvCluster) != "" {
		return testenv.IsolatedRedis(t, 0)
	}
	return testenv.Redis(t)
}

// `worker api` serves the API at /v1/ next to /healthz and /metrics: GET
// /v1/queues lists a queue that a Go client wrote, to a token allowed to
// see it; the log names the tokens and shows no secret.
func TestAPIRoleServesQueues(t *testing.T) {
	e := processRedis(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	if _, err := c.Enqueue(context.Background(), Echo{N: 1}, &client.EnqueueOpts{Queue: queue}); err != nil {
		t.Fatal(err)
	}
	const opsSecret, otherSecret = "ops-Secret-1f0e7a", "other-Secret-9a2b"
	addr := freeAddr(t)
	base := "http://" + addr
	getenv := env(map[string]string{"REDIS_URL": "redis://" + e.Addr, "API_TOKENS": "ops:" + opsSecret + ";other:" + otherSecret + ":elsewhere"})
	logs := apiProcess(t, []string{"api", "-http", addr}, getenv, base, http.DefaultClient)

	code, body := get(t, http.DefaultClient, base+"/v1/queues", opsSecret)
	if code != http.StatusOK || !listsQueue(t, body, queue) {
		t.Fatalf("GET /v1/queues: %d, want 200 listing %s\n%s", code, queue, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/v1/queues", otherSecret); code != http.StatusOK || listsQueue(t, body, queue) {
		t.Errorf("GET /v1/queues with a token of another queue: %d\n%s", code, body)
	}
	if code, _ := get(t, http.DefaultClient, base+"/v1/queues", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/queues without a token: %d, want 401", code)
	}
	if code, body := get(t, http.DefaultClient, base+"/v1/openapi.json", ""); code != http.StatusOK || !json.Valid([]byte(body)) {
		t.Errorf("GET /v1/openapi.json: %d", code)
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if code, _ := get(t, http.DefaultClient, base+p, ""); code != http.StatusOK {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	// The role api alone: no worker and no coordinator started.
	l := logs.String()
	if !strings.Contains(l, `"tokens":["ops","other"]`) || strings.Contains(l, "worker started") || strings.Contains(l, "coordinator started") {
		t.Errorf("logs:\n%s", l)
	}
	if strings.Contains(l, opsSecret) || strings.Contains(l, otherSecret) {
		t.Errorf("the log shows a secret:\n%s", l)
	}
}

// With no token the API serves a loopback address without authentication,
// and says so in its log.
func TestAPIWithoutTokenServesLoopback(t *testing.T) {
	e := processRedis(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	if _, err := c.Enqueue(context.Background(), Echo{N: 1}, &client.EnqueueOpts{Queue: queue}); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	logs := apiProcess(t, []string{"-role", "coordinator,api", "-http", addr, "-redis", "redis://" + e.Addr}, env(nil), base, http.DefaultClient)
	if code, body := get(t, http.DefaultClient, base+"/v1/queues", ""); code != http.StatusOK || !listsQueue(t, body, queue) {
		t.Fatalf("GET /v1/queues: %d\n%s", code, body)
	}
	l := logs.String()
	if !strings.Contains(l, `"level":"WARN","msg":"api: no token configured`) || !strings.Contains(l, "loopback address only") ||
		!strings.Contains(l, "coordinator started") || strings.Contains(l, "worker started") {
		t.Errorf("logs:\n%s", l)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// as PEM files, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	return selfSignedFor(t, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
}

// selfSignedFor is selfSigned for the given names and addresses.
func selfSignedFor(t *testing.T, dnsNames []string, ips []net.IP) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "async test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: ips, DNSNames: dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TLS_CERT_FILE and TLS_KEY_FILE serve the whole -http listener over TLS:
// the API, /healthz; a plain HTTP request gets no answer of the API.
func TestAPIOverTLS(t *testing.T) {
	e := processRedis(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	if _, err := c.Enqueue(context.Background(), Echo{N: 1}, &client.EnqueueOpts{Queue: queue}); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := selfSigned(t)
	const secret = "tls-Secret-77d1c9"
	tokens := writeFile(t, "tokens", "ops:"+secret+"\n")
	addr := freeAddr(t)
	base := "https://" + addr
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	getenv := env(map[string]string{"REDIS_URL": "redis://" + e.Addr, "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile,
		"API_TOKENS_FILE": tokens, "HTTP_ADDR": addr})
	logs := apiProcess(t, []string{"api"}, getenv, base, hc)
	if code, body := get(t, hc, base+"/v1/queues", secret); code != http.StatusOK || !listsQueue(t, body, queue) {
		t.Fatalf("GET /v1/queues over TLS: %d\n%s", code, body)
	}
	if code, _ := get(t, hc, base+"/healthz", ""); code != http.StatusOK {
		t.Errorf("GET /healthz over TLS: %d", code)
	}
	// Plain HTTP: Go's TLS server answers 400 to it, never the API.
	resp, err := http.Get("http://" + addr + "/v1/openapi.json")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "openapi") {
			t.Errorf("plain HTTP to the TLS listener: %d\n%s", resp.StatusCode, b)
		}
	}
	if !strings.Contains(logs.String(), `"tls":true`) {
		t.Errorf("logs:\n%s", logs.String())
	}
}

// A draining process ends the API's outcome waits at once, with a 503 and
// Retry-After (another process answers the same request), instead of
// holding its shutdown for them or cutting their connections.
func TestAPIDrainEndsOutcomeWaits(t *testing.T) {
	e := processRedis(t)
	queue := testenv.Queue(t) // no worker serves it: the task stays pending
	c := testenv.Client(t, e)
	h, err := c.Enqueue(context.Background(), Echo{N: 1}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	_, stopProcess := apiProcessStop(t, []string{"api", "-http", addr, "-redis", "redis://" + e.Addr}, env(nil), base, http.DefaultClient)

	// The wait is the longest the API allows; the test's bound is far
	// below it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sent := make(chan struct{})
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(sent) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet,
		base+"/v1/tasks/"+url.PathEscape(h.ID())+"/outcome?wait=5m", nil)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan answer, 1)
	// A connection of its own: an idle one of the readiness checks could
	// be closed by the shutdown as the request goes out.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := hc.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- answer{resp: resp, body: string(b), err: err}
	}()
	<-sent
	// The wait has begun once the API listens for the queue's outcomes.
	done := keys.ForQueue(queue).Done()
	testenv.Eventually(t, 10*time.Second, "the API to wait for the outcome", func() bool {
		n, err := e.RDB.PubSubNumSub(ctx, done).Result()
		return err == nil && n[done] > 0
	})
	stopProcess()
	a := <-got
	if a.err != nil {
		t.Fatalf("the outcome wait of a draining process: %v", a.err)
	}
	var body struct {
		Error string `json:"error"`
	}
	if a.resp.StatusCode != http.StatusServiceUnavailable || a.resp.Header.Get("Retry-After") == "" ||
		json.Unmarshal([]byte(a.body), &body) != nil || body.Error == "" {
		t.Fatalf("the outcome wait of a draining process: %d %v\n%s", a.resp.StatusCode, a.resp.Header, a.body)
	}
}

// -role worker,api: one process takes a task over HTTP and its worker runs
// it (the upload handler), and the outcome is read back over HTTP.
func TestWorkerAndAPIRolesInOneProcess(t *testing.T) {
	e := processRedis(t)
	queue := testenv.Queue(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "in.txt"), []byte("fleet"), 0o644); err != nil {
		t.Fatal(err)
	}
	const secret = "both-Secret-4e5f"
	addr := freeAddr(t)
	base := "http://" + addr
	getenv := env(map[string]string{"API_TOKENS": "ops:" + secret + ":" + queue})
	logs := apiProcess(t, []string{"-role", "worker,api", "-http", addr, "-redis", "redis://" + e.Addr, "-queues", queue, "-upload-roots", root}, getenv, base, http.DefaultClient)

	body := `{"kind": "upload", "id": "in.txt", "args": {"src": "` + filepath.Join(root, "in.txt") + `", "dest": "` + filepath.Join(root, "out", "in.txt") + `"}}`
	req, err := http.NewRequest(http.MethodPost, base+"/v1/queues/"+queue+"/tasks", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d\n%s", resp.StatusCode, b)
	}
	code, out := get(t, http.DefaultClient, base+"/v1/tasks/"+queue+"/in.txt/outcome?wait=30s", secret)
	var o struct {
		State  string `json:"state"`
		Ended  bool   `json:"ended"`
		Result struct {
			Bytes int    `json:"bytes"`
			Dest  string `json:"dest"`
		} `json:"result"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(out), &o) != nil || o.State != "succeeded" || !o.Ended || o.Result.Bytes != 5 {
		t.Fatalf("outcome: %d\n%s\nlogs:\n%s", code, out, logs.String())
	}
	if got, err := os.ReadFile(filepath.Join(root, "out", "in.txt")); err != nil || string(got) != "fleet" {
		t.Fatalf("uploaded %q, %v", got, err)
	}
	if l := logs.String(); !strings.Contains(l, "worker started") || strings.Contains(l, "coordinator started") {
		t.Errorf("logs:\n%s", l)
	}
}

// With tokens but no TLS, an address that is not loopback gets a warning
// that the tokens travel in clear text; loopback or TLS gets none.
func TestAPIWarnsClearTextTokens(t *testing.T) {
	for _, c := range []struct {
		addr string
		tls  bool
		warn bool
	}{
		{"0.0.0.0:8080", false, true},
		{"[::]:8080", false, true},
		{"10.1.2.3:8080", false, true},
		{"0.0.0.0:8080", true, false},
		{"127.0.0.1:8080", false, false},
		{"[::1]:8080", false, false},
	} {
		var b strings.Builder
		warnClearText(slog.New(slog.NewJSONHandler(&b, nil)), c.addr, c.tls)
		got := strings.Contains(b.String(), `"level":"WARN"`) && strings.Contains(b.String(), "clear text")
		if got != c.warn {
			t.Errorf("%s, TLS %v: warned %v, want %v: %s", c.addr, c.tls, got, c.warn, b.String())
		}
	}
}
