//go:build !linux

package emulator

import "syscall"

// procAttr puts the emulator in its own process group, so Stop can kill the
// JVM and anything it spawned.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
