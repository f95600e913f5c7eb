package upload

import "testing"

// The part size grows, in whole MiB, to keep a known size within 10,000
// parts; past 10,000 parts of 5 GiB the upload fails for good.
func TestPartSizeFor(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, tc := range []struct{ size, want int64 }{
		{-1, 16 << 20},
		{0, 16 << 20},
		{10000 * 16 << 20, 16 << 20},
		{10000*16<<20 + 1, 17 << 20},
		{5 << 40, 525 << 20}, // 5 TiB: S3's largest object
	} {
		got, err := h.partSizeFor(tc.size)
		if err != nil || got != tc.want {
			t.Errorf("size %d: part size %d (%v), want %d", tc.size, got, err, tc.want)
		}
		if tc.size > 0 && (tc.size+got-1)/got > maxParts {
			t.Errorf("size %d: %d parts of %d", tc.size, (tc.size+got-1)/got, got)
		}
	}
	if _, err := h.partSizeFor(maxParts*maxPartSize + 1); err == nil {
		t.Error("a source past 10,000 parts of 5 GiB was accepted")
	}
}
