// httpserve serves a directory over HTTP on a loopback address, for the
// benchmarks (the same server for updog and for the curl pipelines it is
// compared with). It prints the URL, then serves until killed.
//
//	go run ./internal/benchtools/httpserve DIR [ADDR]
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpserve DIR [ADDR]")
		os.Exit(2)
	}
	addr := "127.0.0.1:0"
	if len(os.Args) > 2 {
		addr = os.Args[2]
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("http://%s\n", l.Addr())
	os.Stdout.Sync()
	if err := http.Serve(l, http.FileServer(http.Dir(os.Args[1]))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
