// Package sysutil holds the few system calls updog makes outside disk I/O:
// rebooting, and dropping a block device's cached pages.
package sysutil
