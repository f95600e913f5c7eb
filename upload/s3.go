package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/taskfleet/async/worker"
)

// s3Dest is a parsed "s3://bucket/key".
type s3Dest struct {
	bucket, key string
}

// parseS3 parses dest, an "s3://bucket/key" URL; what is wrong with it is a
// permanent error.
func parseS3(dest string) (s3Dest, error) {
	rest, ok := strings.CutPrefix(dest, "s3://")
	if !ok {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: not s3://bucket/key", dest))
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: no bucket (want s3://bucket/key)", dest))
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: bucket %q: %w", dest, bucket, err))
	}
	if key == "" || strings.HasSuffix(key, "/") {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: no object key after the bucket (want s3://bucket/key)", dest))
	}
	if len(key) > 1024 {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: object key is %d bytes, S3 allows 1024", dest, len(key)))
	}
	if err := s3utils.CheckValidObjectName(key); err != nil {
		return s3Dest{}, worker.Permanent(fmt.Errorf("destination %q: object key: %w", dest, err))
	}
	return s3Dest{bucket: bucket, key: key}, nil
}

// s3Conn is a client of one endpoint, with what the handler derives from
// its configuration.
type s3Conn struct {
	core     *minio.Core
	endpoint string // host[:port]
	secure   bool
}

// endpointOf resolves c's endpoint: host[:port] and whether it is HTTPS.
func endpointOf(c S3Config) (string, bool, error) {
	ep := c.Endpoint
	secure := !c.Insecure
	if ep == "" {
		for _, env := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
			if v := os.Getenv(env); v != "" {
				u, err := url.Parse(v)
				if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
					return "", false, fmt.Errorf("upload: %s=%q is not an http(s) URL", env, v)
				}
				return u.Host, u.Scheme == "https", nil
			}
		}
		return "s3.amazonaws.com", true, nil
	}
	if strings.Contains(ep, "://") {
		return "", false, fmt.Errorf("upload: S3Config.Endpoint %q: give host[:port], and Insecure for plain HTTP", ep)
	}
	return ep, secure, nil
}

// credsOf is c's credentials: the static ones, else the environment's, else
// the shared credentials file's profile.
func credsOf(c S3Config) *credentials.Credentials {
	if c.AccessKey != "" {
		return credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.Token)
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{Profile: c.Profile}, // "" is AWS_PROFILE, else "default"
	})
}

// regionOf is c's region: c.Region, else AWS_REGION, else us-east-1.
func regionOf(c S3Config) string {
	if c.Region != "" {
		return c.Region
	}
	if r := os.Getenv("AWS_REGION"); r != "" {
		return r
	}
	return "us-east-1"
}

// conns caches one client per endpoint, region and credentials.
type conns struct {
	mu sync.Mutex
	m  map[string]*s3Conn
	tr http.RoundTripper
}

func (cs *conns) get(c S3Config) (*s3Conn, error) {
	ep, secure, err := endpointOf(c)
	if err != nil {
		return nil, err
	}
	region := regionOf(c)
	id := strings.Join([]string{ep, strconv.FormatBool(secure), region, strconv.FormatBool(c.PathStyle), c.AccessKey, c.SecretKey, c.Token, c.Profile}, "\x00")
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if sc := cs.m[id]; sc != nil {
		return sc, nil
	}
	lookup := minio.BucketLookupAuto
	if c.PathStyle {
		lookup = minio.BucketLookupPath
	}
	core, err := minio.NewCore(ep, &minio.Options{
		Creds:        credsOf(c),
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
		Transport:    cs.tr,
		// One try per call: the handler retries SlowDown itself, with the
		// server's hint, and leaves other failures to the task's retries
		// (a part re-sent by minio-go would not be counted or limited).
		MaxRetries: 1,
	})
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("upload: S3 endpoint %q: %w", ep, err))
	}
	if cs.m == nil {
		cs.m = map[string]*s3Conn{}
	}
	sc := &s3Conn{core: core, endpoint: ep, secure: secure}
	cs.m[id] = sc
	return sc, nil
}

// hintKey carries a *retryHint in a request's ctx: the transport writes the
// Retry-After of a throttled reply there (minio-go's errors do not carry it).
type hintKey struct{}

type retryHint struct {
	mu sync.Mutex
	d  time.Duration
	ok bool
}

func (h *retryHint) get() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.d, h.ok
}

// hintTransport records Retry-After on the request's retryHint.
type hintTransport struct{ next http.RoundTripper }

func (t hintTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) {
		if h, _ := r.Context().Value(hintKey{}).(*retryHint); h != nil {
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				h.mu.Lock()
				h.d, h.ok = d, true
				h.mu.Unlock()
			}
		}
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After value: whole seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Error codes of S3 that retrying cannot fix.
var permanentCodes = map[string]string{
	"InvalidAccessKeyId":              "the store does not know the access key",
	"SignatureDoesNotMatch":           "the secret key does not match the access key",
	"AccessDenied":                    "the credentials may not write there",
	"InvalidToken":                    "the session token is not valid",
	"ExpiredToken":                    "the session token has expired",
	"NoSuchBucket":                    "there is no such bucket",
	"InvalidBucketName":               "the bucket name is not valid",
	"KeyTooLongError":                 "the object key is too long",
	"InvalidStorageClass":             "the storage class is not valid",
	"InvalidArgument":                 "the store refused an argument",
	"InvalidEncryptionAlgorithmError": "the encryption algorithm is not valid",
	"KMS.NotFoundException":           "the KMS key does not exist",
	"MethodNotAllowed":                "the store does not allow the request",
	"NotImplemented":                  "the store does not implement the request",
}

// credentialCodes are the codes of refused credentials.
var credentialCodes = map[string]bool{"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "AccessDenied": true, "InvalidToken": true, "ExpiredToken": true}

// errSourceChanged fails an attempt whose source changed under it; the
// upload is aborted and its record removed, so the next attempt starts over.
var errSourceChanged = errors.New("the source changed during the upload")

// s3Err turns a store's error of op on d into the handler's: permanent for
// what retrying cannot fix, with what to check.
func (sc *s3Conn) s3Err(op string, d s3Dest, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	er := minio.ToErrorResponse(err)
	where := fmt.Sprintf("s3://%s/%s at %s", d.bucket, d.key, sc.endpoint)
	if er.Code == "BadDigest" || er.Code == "InvalidDigest" || er.Code == "XAmzContentSHA256Mismatch" {
		return fmt.Errorf("%s %s: %w (the store saw other bytes than were hashed: %s)", op, where, errSourceChanged, er.Code)
	}
	if why, ok := permanentCodes[er.Code]; ok {
		if credentialCodes[er.Code] {
			return worker.Permanent(fmt.Errorf("%s %s: credentials refused (%s: %s): check S3Config.AccessKey/SecretKey, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile, and the bucket's policy", op, where, er.Code, why))
		}
		return worker.Permanent(fmt.Errorf("%s %s: %s (%s: %s)", op, where, why, er.Code, er.Message))
	}
	if er.StatusCode == http.StatusBadRequest || er.StatusCode == http.StatusForbidden || er.StatusCode == http.StatusMethodNotAllowed {
		return worker.Permanent(fmt.Errorf("%s %s: %s (%s)", op, where, er.Code, er.Message))
	}
	return fmt.Errorf("%s %s: %w", op, where, err)
}

// throttled reports whether err is the store asking to slow down.
func throttled(err error) bool {
	er := minio.ToErrorResponse(err)
	switch er.Code {
	case "SlowDown", "SlowDownWrite", "SlowDownRead", "TooManyRequests", "RequestLimitExceeded", "Throttling", "ThrottlingException":
		return true
	}
	return er.StatusCode == http.StatusTooManyRequests || er.StatusCode == http.StatusServiceUnavailable
}

// noSuchUpload reports whether err says the multipart upload is gone.
func noSuchUpload(err error) bool {
	return minio.ToErrorResponse(err).Code == "NoSuchUpload"
}

// netErr reports whether err is a network failure (the attempt is retried).
func netErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// sseOf is the server-side encryption of kind with key id.
func sseOf(kind, keyID string) (encrypt.ServerSide, error) {
	switch kind {
	case "":
		if keyID != "" {
			return nil, worker.Permanent(fmt.Errorf("SSE KMS key id %q given without SSE \"aws:kms\"", keyID))
		}
		return nil, nil
	case "AES256":
		return encrypt.NewSSE(), nil
	case "aws:kms":
		s, err := encrypt.NewSSEKMS(keyID, nil)
		if err != nil {
			return nil, worker.Permanent(fmt.Errorf("SSE aws:kms key %q: %w", keyID, err))
		}
		return s, nil
	}
	return nil, worker.Permanent(fmt.Errorf("SSE %q: want \"\", \"AES256\" or \"aws:kms\"", kind))
}

// rateKey is the request limiter's key of a destination or source: kind
// and where, with bytes the limiter's keys do not allow made "_".
func rateKey(kind, where string) string {
	b := []byte(kind + ":" + where)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// minioCode is the S3 error code of err, or its text.
func minioCode(err error) string {
	if c := minio.ToErrorResponse(err).Code; c != "" {
		return c
	}
	return err.Error()
}
