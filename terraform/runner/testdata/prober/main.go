// Command prober reports what a container can reach of the metadata
// server at 169.254.169.254: its HTTP API (which hands out the VM's
// service account tokens) and DNS on port 53 (UDP and TCP), which must
// stay open. The firewall test runs it in containers and in a docker
// build's RUN step.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

const metadata = "169.254.169.254"

func main() {
	expect := flag.String("expect", "", "blocked or open: exit 1 unless the metadata HTTP API is so (and DNS is open)")
	flag.Parse()
	res := map[string]string{"http": "ok", "dns_udp": "ok", "dns_tcp": "ok"}
	client := &http.Client{Timeout: 3 * time.Second}
	if resp, err := client.Get("http://" + metadata + "/computeMetadata/v1/"); err != nil {
		res["http"] = err.Error()
	} else {
		resp.Body.Close()
	}
	if err := udpEcho(); err != nil {
		res["dns_udp"] = err.Error()
	}
	if c, err := net.DialTimeout("tcp", metadata+":53", 3*time.Second); err != nil {
		res["dns_tcp"] = err.Error()
	} else {
		c.Close()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	dnsOpen := res["dns_udp"] == "ok" && res["dns_tcp"] == "ok"
	switch *expect {
	case "blocked":
		if res["http"] == "ok" || !dnsOpen {
			fmt.Fprintln(os.Stderr, "prober: the metadata server's HTTP API is reachable (or DNS is not)")
			os.Exit(1)
		}
	case "open":
		if res["http"] != "ok" {
			os.Exit(1)
		}
	}
}

func udpEcho() error {
	c, err := net.Dial("udp", metadata+":53")
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ping" {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}
