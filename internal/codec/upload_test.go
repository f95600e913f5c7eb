package codec

import (
	"errors"
	"strings"
	"testing"
)

func uploadHash(edit func(m map[string]string)) map[string]string {
	m := map[string]string{"id": "u1", "bucket": "b", "object": "o", "dest": "s3://b/o", "fp": "f",
		"psize": "5242880", "size": "-1", "p:1": "aa,bb,5242880,st", "p:2": "cc,dd,7"}
	if edit != nil {
		edit(m)
	}
	return m
}

// A resume record decodes as written; garbage in any field is refused with
// ErrBadUploadRecord and the field's name, keeping what names the upload.
func TestDecodeUploadRecord(t *testing.T) {
	rec, ok, err := DecodeUploadRecord(uploadHash(nil))
	if err != nil || !ok || rec.ID != "u1" || rec.PartSize != 5<<20 || rec.Size != -1 || len(rec.Parts) != 2 ||
		rec.Parts[1] != (UploadPart{MD5: "aa", SHA256: "bb", Size: 5 << 20, State: "st"}) || rec.Parts[2] != (UploadPart{MD5: "cc", SHA256: "dd", Size: 7}) {
		t.Fatalf("decoded %+v, %v, %v", rec, ok, err)
	}
	if got := EncodeUploadPart(rec.Parts[1]); got != "aa,bb,5242880,st" {
		t.Fatalf("encoded %q", got)
	}
	if _, ok, err := DecodeUploadRecord(map[string]string{}); ok || err != nil {
		t.Fatalf("empty hash: %v, %v; want no record", ok, err)
	}
	for _, c := range []struct {
		field string
		edit  func(m map[string]string)
	}{
		{"psize", func(m map[string]string) { delete(m, "psize") }},
		{"psize", func(m map[string]string) { m["psize"] = "0" }},
		{"psize", func(m map[string]string) { m["psize"] = "5MiB" }},
		{"size", func(m map[string]string) { m["size"] = "-2" }},
		{"size", func(m map[string]string) { m["size"] = "+3" }},
		{"size", func(m map[string]string) { m["size"] = "\xff" }},
		{"p:0", func(m map[string]string) { m["p:0"] = "a,b,1" }},
		{"p:10001", func(m map[string]string) { m["p:10001"] = "a,b,1" }},
		{"p:x", func(m map[string]string) { m["p:x"] = "a,b,1" }},
		{"p:2", func(m map[string]string) { m["p:2"] = "a,b" }},
		{"p:2", func(m map[string]string) { m["p:2"] = "a,b,1,s,t" }},
		{"p:2", func(m map[string]string) { m["p:2"] = "a,b,-1" }},
		{"p:2", func(m map[string]string) { m["p:2"] = "a,b,1e3" }},
	} {
		rec, ok, err := DecodeUploadRecord(uploadHash(c.edit))
		if !errors.Is(err, ErrBadUploadRecord) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s garbled: %v; want ErrBadUploadRecord naming it", c.field, err)
		}
		if !ok || rec.ID != "u1" || rec.Bucket != "b" || rec.Object != "o" {
			t.Errorf("%s garbled: %+v, ok %v; want the upload named", c.field, rec, ok)
		}
	}
}
