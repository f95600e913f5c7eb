package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/upload"
)

// The upload flags and their variables: sizes in decimal and binary units,
// the endpoint as a URL, rates, the sweeper, and what is refused.
func TestUploadConfig(t *testing.T) {
	c, err := parseConfig([]string{"-upload-part-size", "8MiB", "-s3-path-style"}, env(map[string]string{
		"AWS_ENDPOINT_URL":           "https://ignored.example.com",
		"AWS_ENDPOINT_URL_S3":        "http://127.0.0.1:9000",
		"AWS_REGION":                 "eu-west-3",
		"UPLOAD_PART_SIZE":           "64MiB", // the flag wins
		"UPLOAD_MULTIPART_THRESHOLD": "20MB",
		"UPLOAD_PART_CONCURRENCY":    "6",
		"UPLOAD_RATE":                "3500/s",
		"UPLOAD_BANDWIDTH":           "512KiB",
		"UPLOAD_SWEEP":               "30s",
		"S3_CHECKSUMS":               "true",
		"S3_SKIP_HEAD":               "1",
		"S3_SSE":                     "aws:kms",
		"S3_SSE_KMS_KEY_ID":          "alias/uploads",
		"S3_STORAGE_CLASS":           "STANDARD_IA",
		"LEASE":                      "10s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := upload.Config{
		S3: upload.S3Config{Endpoint: "127.0.0.1:9000", Insecure: true, Region: "eu-west-3", PathStyle: true, Checksums: true, SkipHead: true,
			StorageClass: "STANDARD_IA", SSE: "aws:kms", SSEKMSKeyID: "alias/uploads"},
		PartSize: 8 << 20, MultipartThreshold: 20_000_000, PartConcurrency: 6,
		RequestRate: ratelimit.Limit{Rate: 3500, Per: time.Second, Burst: 350},
		Bandwidth:   ratelimit.Bandwidth{BytesPerSecond: 512 << 10},
	}
	if got := c.upload.cfg; got.S3 != want.S3 || got.PartSize != want.PartSize || got.MultipartThreshold != want.MultipartThreshold ||
		got.PartConcurrency != want.PartConcurrency || got.RequestRate != want.RequestRate || got.Bandwidth != want.Bandwidth {
		t.Fatalf("upload config\n%+v, want\n%+v", got, want)
	}
	if c.upload.sweep != 30*time.Second || c.lease != 10*time.Second {
		t.Fatalf("sweep %v, lease %v", c.upload.sweep, c.lease)
	}

	// Defaults: AWS S3 over HTTPS, 16 MiB parts, 4 at once, no bandwidth
	// limit, the library's request rate, a sweep a minute.
	c, err = parseConfig(nil, env(map[string]string{"AWS_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com/"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if u := c.upload; u.cfg.S3.Endpoint != "s3.eu-west-1.amazonaws.com" || u.cfg.S3.Insecure || u.cfg.PartSize != 16<<20 || u.cfg.PartConcurrency != 4 ||
		u.cfg.Bandwidth.BytesPerSecond != 0 || u.cfg.RequestRate.Rate != 0 || u.sweep != time.Minute || c.lease != 30*time.Second {
		t.Fatalf("defaults: %+v, lease %v", u, c.lease)
	}
	if _, err := upload.New(c.upload.cfg); err != nil {
		t.Fatalf("the default configuration: %v", err)
	}
	if c, err = parseConfig([]string{"-upload-rate", "off"}, env(nil), io.Discard); err != nil || c.upload.cfg.RequestRate.Rate >= 0 {
		t.Fatalf("-upload-rate off: %+v, %v; want a negative Rate (no limit)", c.upload.cfg.RequestRate, err)
	}

	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-s3-endpoint", "127.0.0.1:9000"}, nil, "http(s) URL"},
		{[]string{"-s3-endpoint", "ftp://h"}, nil, "http(s) URL"},
		{[]string{"-s3-endpoint", "https://h/bucket"}, nil, "without a path"},
		{nil, map[string]string{"AWS_ENDPOINT_URL_S3": "https://key:secret@h"}, "credentials do not go in the URL"},
		{[]string{"-upload-part-size", "4MiB"}, nil, "5MiB to 5GiB"},
		{[]string{"-upload-part-size", "6GiB"}, nil, "5MiB to 5GiB"},
		{[]string{"-upload-part-size", "lots"}, nil, "-upload-part-size"},
		{[]string{"-upload-multipart-threshold", "0"}, nil, "1 byte to 5GiB"},
		{[]string{"-upload-part-concurrency", "0"}, nil, "-upload-part-concurrency"},
		{[]string{"-upload-rate", "fast"}, nil, "-upload-rate"},
		{[]string{"-upload-rate", "10/forever"}, nil, "not a duration"},
		{[]string{"-upload-bandwidth", "20XB"}, nil, "-upload-bandwidth"},
		{[]string{"-upload-bandwidth", "0"}, nil, "-upload-bandwidth"},
		{[]string{"-upload-sweep", "-1s"}, nil, "-upload-sweep"},
		{[]string{"-s3-sse", "rot13"}, nil, "-s3-sse"},
		{[]string{"-s3-sse-kms-key-id", "k"}, nil, "-s3-sse aws:kms"},
		{nil, map[string]string{"S3_PATH_STYLE": "yes please"}, "S3_PATH_STYLE"},
		{[]string{"-lease", "1ms"}, nil, "-lease"},
		// No flag takes a credential.
		{[]string{"-s3-access-key", "AKIA"}, nil, "flag provided but not defined"},
	} {
		if _, err := parseConfig(tc.args, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "20MB": 20_000_000, "20mb": 20_000_000, "512KiB": 512 << 10, "1.5GiB": 3 << 29,
		"16M": 16 << 20, "2 GB": 2_000_000_000, "100B": 100, "1TiB": 1 << 40,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "1.2.3", "12 parsecs", "1e3"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	for in, want := range map[string]ratelimit.Limit{
		"100":     {Rate: 100, Per: time.Second, Burst: 10},
		"3/s":     {Rate: 3, Per: time.Second, Burst: 1},
		"6000/1m": {Rate: 6000, Per: time.Minute, Burst: 10},
		"50/10s":  {Rate: 50, Per: 10 * time.Second, Burst: 1},
	} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
