// SPDX-License-Identifier: MIT
// go_target: a Go program with known inlined calls, for Go DWARF in symbolize/ (no
// .debug_aranges: libdw 0.188 finds no CU for any pc without the fallback in cu_index.cpp).
// It prints "ready", then its main goroutine blocks reading stdin (a line ends it) in:
//   syscall.Read (inlined, syscall_unix.go)  main.readOne (inlined, main.go:MARK:read)
//   main.main (main.go:MARK:call)  runtime.main  runtime.goexit
// on whichever thread runs the main goroutine.
package main

import (
	"fmt"
	"os"
	"syscall"
)

func readOne(fd int) {
	buf := make([]byte, 1)
	syscall.Read(fd, buf) // MARK:read
}

func main() {
	fmt.Println("ready")
	readOne(int(os.Stdin.Fd())) // MARK:call
}
