package codec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The gate for package upload's resume records, as Redis keeps
// them (a hash per task, keys.Queue.Upload: decimal text and comma-joined
// part values).

// ErrBadUploadRecord is wrapped by every error DecodeUploadRecord returns:
// the bytes read are not what this library writes.
var ErrBadUploadRecord = errors.New("codec: malformed upload record")

// UploadRecord is what a task's multipart upload has done.
type UploadRecord struct {
	ID          string // the store's upload id
	Bucket      string
	Object      string
	Dest        string // the task's destination, as given
	Fingerprint string // of the source, when the upload began
	PartSize    int64
	Size        int64 // the source's size, -1 when unknown
	Parts       map[int]UploadPart
}

// UploadPart is one stored part, as the attempt that sent it computed.
type UploadPart struct {
	MD5    string // hex (the store's ETag, which is the MD5 but with SSE-KMS)
	SHA256 string // hex
	Size   int64
	// State is the whole object's hash state after this part, when the
	// attempt read the source in order (opaque; no commas): a resume that
	// skips the parts before reads on from there.
	State string
}

// EncodeUploadPart is p as a record's part field holds it:
// "<md5>,<sha256>,<size>[,<state>]".
func EncodeUploadPart(p UploadPart) string {
	v := p.MD5 + "," + p.SHA256 + "," + strconv.FormatInt(p.Size, 10)
	if p.State != "" {
		v += "," + p.State
	}
	return v
}

// maxUploadParts is S3's largest part number.
const maxUploadParts = 10000

// DecodeUploadRecord checks and decodes a resume record's hash (as HGETALL
// returns it). A hash without an id is no record (ok false, no error). A
// part size that is not a positive decimal integer, a size that is not one
// of at least -1, a part field "p:<n>" whose n is not 1..10000, or whose
// value is not "<md5>,<sha256>,<size>[,<state>]" with a size of at least
// 0, is refused with an error naming the field; rec then holds what was
// read before it (its id, bucket and object, for the caller to abort the
// upload).
func DecodeUploadRecord(m map[string]string) (rec UploadRecord, ok bool, err error) {
	if m["id"] == "" {
		return UploadRecord{}, false, nil
	}
	rec = UploadRecord{ID: m["id"], Bucket: m["bucket"], Object: m["object"], Dest: m["dest"], Fingerprint: m["fp"], Parts: map[int]UploadPart{}}
	num := func(name string, min int64) (int64, error) {
		s, present := m[name]
		if !present {
			return 0, fmt.Errorf("field %s is missing: %w", name, ErrBadUploadRecord)
		}
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || n < min || strings.HasPrefix(s, "+") {
			return 0, fmt.Errorf("field %s is %.32q, want a decimal integer of at least %d: %w", name, s, min, ErrBadUploadRecord)
		}
		return n, nil
	}
	if rec.PartSize, err = num("psize", 1); err != nil {
		return rec, true, err
	}
	if rec.Size, err = num("size", -1); err != nil {
		return rec, true, err
	}
	for f, v := range m {
		ns, isPart := strings.CutPrefix(f, "p:")
		if !isPart {
			continue
		}
		n, perr := strconv.Atoi(ns)
		if perr != nil || n < 1 || n > maxUploadParts || strings.HasPrefix(ns, "+") {
			return rec, true, fmt.Errorf("field %.32q is not a part number 1..%d: %w", f, maxUploadParts, ErrBadUploadRecord)
		}
		parts := strings.Split(v, ",")
		if len(parts) < 3 || len(parts) > 4 {
			return rec, true, fmt.Errorf("field %s is %.64q, want <md5>,<sha256>,<size>[,<state>]: %w", f, v, ErrBadUploadRecord)
		}
		size, perr := strconv.ParseInt(parts[2], 10, 64)
		if perr != nil || size < 0 || strings.HasPrefix(parts[2], "+") {
			return rec, true, fmt.Errorf("field %s has the size %.32q, want a decimal integer of at least 0: %w", f, parts[2], ErrBadUploadRecord)
		}
		p := UploadPart{MD5: parts[0], SHA256: parts[1], Size: size}
		if len(parts) == 4 {
			p.State = parts[3]
		}
		rec.Parts[n] = p
	}
	return rec, true, nil
}
