#!/usr/bin/perl
# Net::OpenSSH::Parallel side of `cargo bench --bench fanout`: one process, one case.
# Every label is the same server (127.0.0.1:PORT); exit status 0 only when every label succeeded.
use strict;
use warnings;
use Getopt::Long;
use Net::OpenSSH::Parallel;

my %o = (kind => 'run', cmd => 'true', steps => 1, joins => 1);
GetOptions(\%o, 'kind=s', 'n=i', 'port=i', 'user=s', 'key=s', 'cmd=s', 'steps=i', 'joins=i',
           'local=s', 'remote=s') or die "bad options\n";
my $n = $o{n};
my $p = Net::OpenSSH::Parallel->new(workers => $n, connections => $n);
for my $i (1 .. $n) {
    $p->add_host("h$i",
                 host => '127.0.0.1', port => $o{port}, user => $o{user}, key_path => $o{key},
                 master_opts => [-o => 'StrictHostKeyChecking=no', -o => 'UserKnownHostsFile=/dev/null',
                                 -o => 'GlobalKnownHostsFile=/dev/null', -o => 'LogLevel=ERROR',
                                 -o => 'IdentitiesOnly=yes']);
}
if ($o{kind} eq 'run') {
    for (1 .. $o{steps}) {
        $p->all(command => $o{cmd});
        $p->all(join => '*') if $o{joins};
    }
} elsif ($o{kind} eq 'put') {
    $p->all(scp_put => $o{local}, $o{remote});
} elsif ($o{kind} eq 'get') {
    $p->all(scp_get => $o{remote}, $o{local});
} elsif ($o{kind} eq 'rsync') {
    # Net::OpenSSH runs plain `rsync -q` unless told: -a, as the others use.
    $p->all(rsync_put => {archive => 1}, $o{local}, $o{remote});
} else {
    die "unknown kind $o{kind}\n";
}
$p->run;
my %errors = $p->get_errors;
if (%errors) {
    my @labels = sort keys %errors;
    print STDERR scalar(@labels), " labels failed, e.g. $labels[0]: $errors{$labels[0]}\n";
    exit 1;
}
exit 0;
