# A Perl server that blocks in accept(2), as IO::Socket servers do:
# perl server.pl PORT. It answers each connection with one HTTP response,
# and on SIGTERM stops accepting and exits once the answer in hand is sent.
use strict;
use warnings;
use IO::Socket::INET;

my $port = shift or die "usage: server.pl PORT\n";
my $stop = 0;
$SIG{TERM} = sub { $stop = 1 };
my $srv = IO::Socket::INET->new(
    LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 128,
    ReuseAddr => 1, Proto => "tcp",
) or die "listen: $!\n";
$| = 1;
print "listening 127.0.0.1:$port\n";
until ($stop) {
    my $c = $srv->accept;
    if (!$c) {
        next if $!{EINTR};
        die "accept: $!\n";    # EAGAIN on a socket made non-blocking under it
    }
    my $req = "";
    while (defined(my $line = <$c>)) {
        $req .= $line;
        last if $line eq "\r\n";
    }
    my $body = sprintf("pid=%07d perl\n", $$);
    print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
    close $c;
}
