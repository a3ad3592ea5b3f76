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
//	prog count FILE append a byte to FILE and print count=<its size>
//	prog make S FILE
//	                sleep S seconds, then write FILE and print "made FILE"
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
	if len(os.Args) == 4 && os.Args[1] == "make" {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		time.Sleep(time.Duration(n) * time.Second)
		if err := os.WriteFile(os.Args[3], []byte("made\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("made", os.Args[3])
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: prog cat|count FILE, prog line|lines|sleep|alloc|spin N, prog make S FILE")
		os.Exit(2)
	}
	if os.Args[1] == "count" {
		f, err := os.OpenFile(os.Args[2], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.Write([]byte{'x'})
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		fi, serr := os.Stat(os.Args[2])
		if err == nil {
			err = serr
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("count=%d\n", fi.Size())
		return
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
