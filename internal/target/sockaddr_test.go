package target

import "testing"

func FuzzParseSockaddr(f *testing.F) {
	f.Add([]byte{2, 0, 0x1f, 0xa4, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, _, ok := ParseSockaddr(b)
		if ok && !ap.IsValid() {
			t.Fatalf("parseSockaddr(%x) = invalid %v", b, ap)
		}
	})
}
