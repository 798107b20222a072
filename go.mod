module github.com/updog/updog

go 1.26

require (
	github.com/spf13/pflag v1.0.10
	golang.org/x/sys v0.43.0
)

require github.com/theupdateframework/go-tuf/v2 v2.4.2 // indirect
