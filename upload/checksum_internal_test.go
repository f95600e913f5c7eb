package upload

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// A store's whole-object SHA-256 is compared with the source's (a single
// PUT, or a full-object checksum) or with the composite of the parts'
// SHA-256s; any other value fails the upload, and a check is named only
// when made.
func TestSumCheck(t *testing.T) {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	p1, p2 := sha256.Sum256([]byte("part one")), sha256.Sum256([]byte("part two"))
	whole := sha256.Sum256([]byte("part onepart two"))
	cat := sha256.Sum256(append(p1[:], p2[:]...))
	composite := b64(cat[:]) + "-2"
	if got := compositeSHA256(map[int]string{1: b64(p1[:]), 2: b64(p2[:])}, 2); got != composite {
		t.Fatalf("compositeSHA256 = %s, want %s", got, composite)
	}
	if got := compositeSHA256(map[int]string{1: b64(p1[:])}, 2); got != "" {
		t.Fatalf("compositeSHA256 with a part missing = %q, want \"\"", got)
	}
	j := &job{}
	multi := wantSums{sha: b64(whole[:]), composite: composite}
	single := wantSums{sha: b64(whole[:])}
	for _, tc := range []struct {
		got   string
		want  wantSums
		check string // "" when it must fail
	}{
		{composite, multi, "sha256-composite"},
		{b64(cat[:]), multi, "sha256-composite"}, // without the part count
		{b64(whole[:]), multi, "sha256"},         // a full-object checksum
		{b64(whole[:]), single, "sha256"},
		{b64(cat[:]) + "-3", multi, ""}, // another part count
		{b64(p1[:]) + "-2", multi, ""},  // other parts
		{b64(p1[:]), multi, ""},
		{b64(p1[:]), single, ""},
		{composite, single, ""}, // a composite for a single PUT
	} {
		c, err := j.sumCheck(tc.got, tc.want)
		if c != tc.check || (tc.check == "") != (err != nil) {
			t.Errorf("sumCheck(%s, %+v) = %q, %v; want %q", tc.got, tc.want, c, err, tc.check)
		}
		if err != nil && !strings.Contains(err.Error(), "SHA-256") {
			t.Errorf("sumCheck(%s): error %q does not say what differs", tc.got, err)
		}
	}
}
