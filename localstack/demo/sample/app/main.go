// Command hello is the sample app make demo deploys: an HTTP server on
// :8080 that greets with the message committed next to it.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	msg, err := os.ReadFile("/message.txt")
	if err != nil {
		msg = []byte("hello")
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from kube-git-deploy! %s\n", strings.TrimSpace(string(msg)))
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
