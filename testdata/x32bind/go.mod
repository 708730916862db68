module x32bind

go 1.23
