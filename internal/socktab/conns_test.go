package socktab

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestDestroyTCP: SOCK_DESTROY of a server's end of a connection, found by
// DiagTCPConns with the bytes its client sent waiting unread: the client
// reads a reset; the server still reads those bytes, then ECONNABORTED,
// and cannot write; the connection is gone from the table. (Needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY.)
func TestDestroyTCP(t *testing.T) {
	c, s, port := connected(t)
	c.Write([]byte("GET"))
	find := func() (Conn, bool) {
		conns, err := DiagTCPConns(port)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range conns {
			if x.Remote == c.LocalAddr().(*net.TCPAddr).AddrPort() {
				return x, true
			}
		}
		return Conn{}, false
	}
	var x Conn
	for deadline := time.Now().Add(10 * time.Second); x.RQueue != 3; time.Sleep(time.Millisecond) {
		x, _ = find()
		if time.Now().After(deadline) {
			t.Fatalf("the server's end never showed 3 bytes unread: %+v", x)
		}
	}
	if !x.Info || x.BytesReceived != 3 || x.Local != s.LocalAddr().(*net.TCPAddr).AddrPort() || x.Cookie == 0 || x.Inode == 0 {
		t.Fatalf("DiagTCPConns: %+v; want tcp_info with 3 bytes received, the server's address, a cookie and an inode", x)
	}
	if err := DestroyTCP(x); errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EPERM) {
		t.Skipf("no SOCK_DESTROY here: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client read %v; want a reset", err)
	}
	// What had arrived stays readable (tcp_abort leaves the receive queue):
	// a request the server reads after the destroy is one it cannot answer.
	s.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if string(got) != "GET" || !errors.Is(err, syscall.ECONNABORTED) {
		t.Errorf("the server read %q, %v; want the 3 bytes that had arrived, then ECONNABORTED", got, err)
	}
	if _, err := s.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err == nil {
		t.Errorf("the server could write after the destroy")
	}
	if _, ok := find(); ok {
		t.Errorf("the destroyed connection is still in the table")
	}
	if err := DestroyTCP(x); err == nil {
		t.Errorf("a second SOCK_DESTROY of the same connection succeeded; want ENOENT")
	}
}

// TestDiagTCPHeld: a server's end of a connection is held from its accept
// to its close, also once the server has shut down its side (FIN_WAIT2,
// which DiagTCPConns leaves out); once closed it has no inode and is gone.
func TestDiagTCPHeld(t *testing.T) {
	c, s, port := connected(t)
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	held := func(port uint16) ([]Conn, error) { return DiagTCPHeld(syscall.AF_INET, port) }
	find := func(diag func(uint16) ([]Conn, error)) (Conn, bool) {
		conns, err := diag(port)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range conns {
			if x.Remote == client {
				return x, true
			}
		}
		return Conn{}, false
	}
	if x, ok := find(held); !ok || x.State != 1 || x.Inode == 0 || x.Local != s.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Fatalf("DiagTCPHeld, established: %+v (found %v); want ESTABLISHED with an inode and the server's address", x, ok)
	}
	s.(*net.TCPConn).CloseWrite()
	io.ReadAll(c) // the FIN, acknowledged: the server's end goes to FIN_WAIT2
	var x Conn
	for deadline := time.Now().Add(10 * time.Second); x.State != 5; time.Sleep(time.Millisecond) {
		x, _ = find(held)
		if time.Now().After(deadline) {
			t.Fatalf("DiagTCPHeld after the server's shutdown: %+v, want FIN_WAIT2", x)
		}
	}
	if x.Inode == 0 {
		t.Errorf("DiagTCPHeld, FIN_WAIT2: %+v, want an inode", x)
	}
	if _, ok := find(DiagTCPConns); ok {
		t.Error("DiagTCPConns lists a FIN_WAIT2 connection")
	}
	s.Close()
	if x, ok := find(held); ok {
		t.Errorf("DiagTCPHeld lists the closed end: %+v", x)
	}
}

// connected returns the two ends of a connection on loopback, client and
// server, and the server's port; they are closed at cleanup.
func connected(t *testing.T) (client, server net.Conn, port uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s, uint16(ln.Addr().(*net.TCPAddr).Port)
}
