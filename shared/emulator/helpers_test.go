package emulator

import (
	"net"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func listen(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}
