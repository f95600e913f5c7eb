package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/upload"
)

// uploadFlags are the flags of the upload handler: where s3://
// destinations are (credentials are never flags: they come from the
// environment or a profile, as every AWS tool reads them), the size of
// multipart uploads' parts, the per-destination limits, and the sweeper.
type uploadFlags struct {
	endpoint, region, storageClass, sse, sseKMSKeyID *string
	pathStyle, checksums, skipHead                   *bool
	partSize, threshold, partConcurrency             *string
	rate, bandwidth, sweep                           *string
	envErr                                           error // a bad boolean variable
}

// uploadSettings is what the upload flags say.
type uploadSettings struct {
	// cfg is the handler's configuration but for Roots, Redis and Logger,
	// which the process sets.
	cfg upload.Config
	// sweep is how often the sweeper looks for multipart uploads of tasks
	// that ended (0: it does not run).
	sweep time.Duration
}

// defaultSweep is -upload-sweep's default.
const defaultSweep = time.Minute

// addUploadFlags defines the upload flags on fs, with their environment
// variables read through env(name, default).
func addUploadFlags(fs *flag.FlagSet, env func(name, def string) string) *uploadFlags {
	endpoint := env("AWS_ENDPOINT_URL_S3", env("AWS_ENDPOINT_URL", ""))
	var envErr error
	boolEnv := func(name string) bool {
		v := env(name, "false")
		b, err := strconv.ParseBool(v)
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("%s=%q: want true or false", name, v)
		}
		return b
	}
	f := &uploadFlags{
		endpoint: fs.String("s3-endpoint", endpoint, "the S3-compatible store of s3:// destinations, a `URL` such as https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000 (plain HTTP); "+
			"default AWS S3 (env AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL). Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or the shared credentials file's profile (AWS_PROFILE)"),
		region:       fs.String("s3-region", env("AWS_REGION", ""), "the `REGION` of s3:// destinations (env AWS_REGION; default us-east-1)"),
		pathStyle:    fs.Bool("s3-path-style", boolEnv("S3_PATH_STYLE"), "name the bucket in the path, not the host name: MinIO and most self-hosted stores (env S3_PATH_STYLE=true)"),
		checksums:    fs.Bool("s3-checksums", boolEnv("S3_CHECKSUMS"), "send each part's SHA-256 as x-amz-checksum-sha256 for the store to verify and keep: AWS S3, recent MinIO (env S3_CHECKSUMS=true)"),
		skipHead:     fs.Bool("s3-skip-head", boolEnv("S3_SKIP_HEAD"), "no HEAD after a multipart upload (or an SSE-KMS single PUT; other single PUTs have none): the stored size not read back (env S3_SKIP_HEAD=true)"),
		storageClass: fs.String("s3-storage-class", env("S3_STORAGE_CLASS", ""), "default storage `CLASS` of uploaded objects, e.g. STANDARD_IA (env S3_STORAGE_CLASS; a task's storage_class wins)"),
		sse:          fs.String("s3-sse", env("S3_SSE", ""), "default server-side encryption, `KIND` AES256 or aws:kms (env S3_SSE; a task's sse wins)"),
		sseKMSKeyID:  fs.String("s3-sse-kms-key-id", env("S3_SSE_KMS_KEY_ID", ""), "the KMS `KEY` of -s3-sse aws:kms (env S3_SSE_KMS_KEY_ID)"),
		partSize:     fs.String("upload-part-size", env("UPLOAD_PART_SIZE", "16MiB"), "`SIZE` of a multipart upload's parts, 5MiB to 5GiB (env UPLOAD_PART_SIZE)"),
		threshold:    fs.String("upload-multipart-threshold", env("UPLOAD_MULTIPART_THRESHOLD", ""), "objects up to `SIZE` go in one PUT, larger ones in parts (env UPLOAD_MULTIPART_THRESHOLD; default the part size)"),
		partConcurrency: fs.String("upload-part-concurrency", env("UPLOAD_PART_CONCURRENCY", "4"),
			"`N` parts of one upload sent at once (env UPLOAD_PART_CONCURRENCY)"),
		rate: fs.String("upload-rate", env("UPLOAD_RATE", ""),
			"requests per destination (bucket, or URL host) across the fleet, `N` per second or N/DURATION such as 3500/1s, or off (env UPLOAD_RATE; default 3500/1s)"),
		bandwidth: fs.String("upload-bandwidth", env("UPLOAD_BANDWIDTH", ""),
			"bytes per second per destination across the fleet, a `SIZE` such as 20MB or 512KiB (env UPLOAD_BANDWIDTH; default unlimited)"),
		sweep: fs.String("upload-sweep", env("UPLOAD_SWEEP", defaultSweep.String()),
			"with the role worker, every `DURATION` abort the multipart uploads of this worker's queues whose tasks ended dead or cancelled unseen by their handler; 0 turns it off (env UPLOAD_SWEEP)"),
	}
	f.envErr = envErr
	return f
}

// settings checks the flags' values.
func (f *uploadFlags) settings() (uploadSettings, error) {
	var s uploadSettings
	c := &s.cfg
	var err error
	if c.S3.Endpoint, c.S3.Insecure, err = parseEndpoint(*f.endpoint); err != nil {
		return s, err
	}
	c.S3.Region = *f.region
	if f.envErr != nil {
		return s, f.envErr
	}
	c.S3.PathStyle, c.S3.Checksums, c.S3.SkipHead = *f.pathStyle, *f.checksums, *f.skipHead
	c.S3.StorageClass = *f.storageClass
	switch *f.sse {
	case "", "AES256", "aws:kms":
	default:
		return s, fmt.Errorf("-s3-sse %q: want AES256 or aws:kms", *f.sse)
	}
	if *f.sseKMSKeyID != "" && *f.sse != "aws:kms" {
		return s, errors.New("-s3-sse-kms-key-id is the key of -s3-sse aws:kms: set that too")
	}
	c.S3.SSE, c.S3.SSEKMSKeyID = *f.sse, *f.sseKMSKeyID
	if c.PartSize, err = parseSize(*f.partSize); err != nil {
		return s, fmt.Errorf("-upload-part-size: %w", err)
	}
	if c.PartSize < 5<<20 || c.PartSize > 5<<30 {
		return s, fmt.Errorf("-upload-part-size %s: S3's parts are 5MiB to 5GiB", *f.partSize)
	}
	if *f.threshold != "" {
		if c.MultipartThreshold, err = parseSize(*f.threshold); err != nil {
			return s, fmt.Errorf("-upload-multipart-threshold: %w", err)
		}
		if c.MultipartThreshold < 1 || c.MultipartThreshold > 5<<30 {
			return s, fmt.Errorf("-upload-multipart-threshold %s: want 1 byte to 5GiB (S3's largest single PUT)", *f.threshold)
		}
	}
	if c.PartConcurrency, err = strconv.Atoi(*f.partConcurrency); err != nil || c.PartConcurrency < 1 {
		return s, fmt.Errorf("-upload-part-concurrency %q: want a positive number", *f.partConcurrency)
	}
	if *f.rate == "off" {
		c.RequestRate = ratelimit.Limit{Rate: -1} // upload.Config: no request limit
	} else if *f.rate != "" {
		if c.RequestRate, err = parseRate(*f.rate); err != nil {
			return s, fmt.Errorf("-upload-rate: %w", err)
		}
	}
	if *f.bandwidth != "" {
		bw, err := parseSize(strings.TrimSuffix(*f.bandwidth, "/s"))
		if err != nil {
			return s, fmt.Errorf("-upload-bandwidth: %w", err)
		}
		c.Bandwidth = ratelimit.Bandwidth{BytesPerSecond: bw}
		if err := c.Bandwidth.Validate(); err != nil {
			return s, fmt.Errorf("-upload-bandwidth %s: %w", *f.bandwidth, err)
		}
	}
	if s.sweep, err = time.ParseDuration(*f.sweep); err != nil || s.sweep < 0 {
		return s, fmt.Errorf("-upload-sweep %q: want a duration such as 1m, or 0 for none", *f.sweep)
	}
	return s, nil
}

// parseEndpoint reads an S3 endpoint URL: its host[:port], and whether it
// is plain HTTP. "" is the default endpoint (AWS S3).
func parseEndpoint(v string) (host string, insecure bool, err error) {
	if v == "" {
		return "", false, nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false, fmt.Errorf("-s3-endpoint %q: want an http(s) URL such as https://s3.eu-west-1.amazonaws.com", v)
	}
	if u.User != nil {
		return "", false, fmt.Errorf("-s3-endpoint %s://%s: credentials do not go in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)", u.Scheme, u.Host)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("-s3-endpoint %q: want the store's URL alone, without a path (the bucket goes in the task's s3://bucket/key)", v)
	}
	return u.Host, u.Scheme == "http", nil
}

// sizeUnits are the units parseSize knows, decimal and binary.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// parseSize reads a size in bytes: a number with an optional unit, decimal
// (KB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB, or K, M,
// G, T: powers of 1024), case-insensitive: "20MB" is 20,000,000 bytes,
// "512KiB" 524,288, "1.5GiB" 1,610,612,736.
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mul, ok := sizeUnits[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, such as 20MB or 512KiB", v)
	}
	b := math.Round(n * mul)
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	return int64(b), nil
}

// parseRate reads a request rate: "N" per second, or "N/DURATION" ("N/s",
// "N/1m", "N/10s"). The burst is a tenth of a second's worth, at least 1.
func parseRate(v string) (ratelimit.Limit, error) {
	num, per, found := strings.Cut(strings.TrimSpace(v), "/")
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return ratelimit.Limit{}, fmt.Errorf("rate %q: want N per second, or N/DURATION such as 3500/1s", v)
	}
	d := time.Second
	if found {
		if per != "" && (per[0] < '0' || per[0] > '9') {
			per = "1" + per // "s" is "1s"
		}
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return ratelimit.Limit{}, fmt.Errorf("rate %q: the period %q is not a duration such as 1s or 1m", v, per)
		}
	}
	burst := max(1, int(int64(n)*int64(100*time.Millisecond)/int64(d)))
	lim := ratelimit.Limit{Rate: n, Per: d, Burst: burst}
	if err := lim.Validate(); err != nil {
		return ratelimit.Limit{}, fmt.Errorf("rate %q: %w", v, err)
	}
	return lim, nil
}
