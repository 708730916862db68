// x32bind binds 127.0.0.1:PORT with the x32 ABI's bind(2) (x86_64's number
// with __X32_SYSCALL_BIT set), then listens and answers each connection
// with "x32": a program takeover's filter must trap in that ABI too. It
// prints "listening" once it listens, or why its bind failed.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// x32Syscall makes a system call with the SYSCALL instruction, nr as is.
func x32Syscall(nr, a1, a2, a3 uintptr) uintptr

func main() {
	port, _ := strconv.Atoi(os.Args[1])
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		fmt.Println("socket:", err)
		os.Exit(1)
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	sa.Port = uint16(port>>8) | uint16(port&0xff)<<8
	r := x32Syscall(syscall.SYS_BIND|0x40000000, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if errno := syscall.Errno(-int(r)); int(r) < 0 {
		fmt.Println("bind:", errno)
		os.Exit(1)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening")
	for {
		c, _, err := syscall.Accept(fd)
		if err != nil {
			os.Exit(1)
		}
		syscall.Write(c, []byte("x32\n"))
		syscall.Close(c)
	}
}
