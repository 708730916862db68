package socktab

import (
	"net"
	"testing"
)

// BenchmarkSockDiag: one sock_diag query for the TCP listeners.
func BenchmarkSockDiag(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	for b.Loop() {
		if _, err := DiagTCPListeners(); err != nil {
			b.Fatal(err)
		}
	}
}
