// Command prog is a static helper run by build tests in RUN steps of
// images built FROM scratch (no shell): it prints, sleeps, allocates or
// burns CPU on demand.
//
//	prog cat FILE   print FILE
//	prog line N     print N bytes of 'a' with no newline
//	prog lines N    print N numbered lines
//	prog sleep S    sleep S seconds
//	prog alloc MiB  allocate and touch MiB mebibytes
//	prog spin S     keep two CPUs busy for S seconds, then print
//	                cpu-ratio=<CPU seconds used / wall seconds>
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: prog line|lines|sleep|alloc|spin N")
		os.Exit(2)
	}
	if os.Args[1] == "cat" {
		data, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s=%s\n", os.Args[2], strings.TrimSpace(string(data)))
		return
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "line":
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'a'
		}
		for left := n; left > 0; left -= len(chunk) {
			w.Write(chunk[:min(left, len(chunk))])
		}
		w.Flush()
	case "lines":
		w := bufio.NewWriter(os.Stdout)
		for i := range n {
			fmt.Fprintf(w, "line %d\n", i)
		}
		w.Flush()
	case "sleep":
		time.Sleep(time.Duration(n) * time.Second)
	case "alloc":
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
	case "spin":
		start := time.Now()
		done := make(chan struct{})
		for range 2 {
			go func() {
				for time.Since(start) < time.Duration(n)*time.Second {
				}
				done <- struct{}{}
			}()
		}
		<-done
		<-done
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("cpu-ratio=%.2f\n", cpu.Seconds()/time.Since(start).Seconds())
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
