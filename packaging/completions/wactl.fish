# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_wactl_global_optspecs
    string join \n h/help V/version
end

function __fish_wactl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_wactl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_wactl_using_subcommand
    set -l cmd (__fish_wactl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c wactl -n "__fish_wactl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_needs_command" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "keygen" -d 'Create an Ed25519 token signing key pair'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "token" -d 'Mint a credential token and print it on stdout'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "up" -d 'Run a local deployment: one wa-store, wa-chat, wa-media and wa-register'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "home" -d 'Tell which island is the home of each USER in a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "promote" -d 'Make an island\'s secondary its primary (failover or switchover by hand)'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "send" -d 'Send one text message through a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "group" -d 'Make, change, read and send to a group through a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "watch" -d 'Receive as a user through a `wactl up` deployment, until Ctrl-C'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "register" -d 'Sign up through a `wactl up` deployment\'s wa-register'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "code" -d 'Print the last development SMS code sent to a number'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "man" -d 'Write man pages for wactl and each subcommand'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "status" -d 'Show every node: up or down, ready or not, version, uptime, connections, cluster epoch and link queues'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "cluster" -d 'The islands of the cluster, as their wa-store nodes report them'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "sessions" -d 'List USER\'s sessions on every edge: edge, session id, device, since when'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "kick" -d 'End USER\'s sessions (of one DEVICE, or all) on every edge'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "queues" -d 'Show the longest mailboxes of every store (as of each store\'s last sweep)'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "expire" -d 'Delete, on every store now, the undelivered items older than its `[mailbox] expire_after`, instead of waiting for its next sweep (`[mailbox] sweep_interval`)'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "pumping" -d 'The SMS-pumping signal of every wa-register: which number prefixes it holds to `pumping.tightened` now, and their release by an operator'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "push" -d 'Push notifications'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "drain" -d 'Take an edge out of service: it turns not ready, refuses new clients and ends its sessions spread over --over, so that they reconnect to the other edges a few at a time'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "backup" -d 'Copy a running store\'s data (every mailbox and every account, phone number and device generation) into DIR on the store\'s machine, while it serves'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "restore" -d 'Make DATA_DIR a copy of the backup BACKUP, for a store to start from'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "user" -d 'An account at its home: show it, ban or unban it, delete it'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "trace" -d 'Where the message MESSAGE_ID from FROM to TO is now, from the records of TO\'s home: stored (accepted or not yet), in memory (and the journal) or in the engine, pushed to which session, acknowledged, deleted, and its delivered receipt'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "bench" -d 'Load a running `wactl up` deployment and measure it'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "config" -d 'Configuration files'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "completions" -d 'Print a completion script for SHELL on stdout'
complete -c wactl -n "__fish_wactl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand keygen" -l out -d 'Directory for the key files (created if missing)' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand keygen" -l id -d 'Key id: the file names and the `key_id` that tokens will name' -r
complete -c wactl -n "__fish_wactl_using_subcommand keygen" -l force -d 'Replace key files that already exist'
complete -c wactl -n "__fish_wactl_using_subcommand keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand keygen" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand token" -l key -d 'The private signing key (from `wactl keygen`)' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand token" -l key-id -d 'The id the edges know the matching public key by' -r
complete -c wactl -n "__fish_wactl_using_subcommand token" -l user -d 'The user id the token authenticates' -r
complete -c wactl -n "__fish_wactl_using_subcommand token" -l device -d 'The device number of the user' -r
complete -c wactl -n "__fish_wactl_using_subcommand token" -l generation -d 'The device\'s credential generation (a newer one revokes older ones)' -r
complete -c wactl -n "__fish_wactl_using_subcommand token" -l ttl -d 'How long the token is valid, e.g. `30m`, `24h`, `7days`' -r
complete -c wactl -n "__fish_wactl_using_subcommand token" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand token" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand up" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand up" -l host -d 'Address both services listen on' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l link-port -d 'Port of wa-store\'s internal link listener (island K listens on LINK_PORT + K - 1)' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l port -d 'Port of wa-chat for clients, TCP (TLS) and UDP (QUIC) alike (edge K listens on PORT + K - 1)' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l islands -d 'Islands: wa-store nodes, each the home of an even share of the fragments. A directory keeps the number it was created with' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l edges -d 'Edges: wa-chat nodes, each linked to every island' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l media-port -d 'Port of wa-media (HTTPS); 0 picks a free one, shown when ready' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l register-port -d 'Port of wa-register (HTTPS); 0 picks a free one, shown when ready' -r
complete -c wactl -n "__fish_wactl_using_subcommand up" -l chat-toml -d 'TOML tables added to every wa-chat config this writes, e.g. a file holding `[limits]` `max_connections = 120000` for a bench past the default 100,000 (see wa-chat.toml(5)). Tables wactl up writes itself ([listen], [tls], [tokens], [cluster], [shutdown], [admin]) cannot be repeated; the configs are rewritten at every start, so this is how a setting stays' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand up" -l store-toml -d 'TOML tables added to every wa-store config this writes, e.g. `[groups]` or `[cache]` settings (see wa-store.toml(5)); tables wactl up writes itself ([link], [cluster], [shutdown], [admin]) cannot be repeated' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand up" -l secondaries -d 'Give every island a secondary wa-store (island K\'s listens on LINK_PORT + N + K - 1) that follows its primary, at durability `replicated`. Kill a primary (`kill -9`), then `wactl promote island-K --dir DIR`: the secondary takes over, and the old primary, started again by wactl up, catches up as the new secondary. A directory keeps whether it was created with secondaries'
complete -c wactl -n "__fish_wactl_using_subcommand up" -l etcd -d 'With --secondaries: start a local etcd (Debian\'s etcd-server; its data in DIR/etcd, emptied at every start, its log in DIR/etcd.log) and run with automatic failover, a 2 s lease: kill a primary and its secondary takes over by itself within seconds, no `wactl promote`'
complete -c wactl -n "__fish_wactl_using_subcommand up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand up" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand home" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand home" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand home" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand promote" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand promote" -l map -d 'The cluster map to rewrite, if not DIR/cluster.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand promote" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand promote" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand send" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand send" -l from -d 'The sender\'s user id' -r
complete -c wactl -n "__fish_wactl_using_subcommand send" -l to -d 'The recipient\'s user id' -r
complete -c wactl -n "__fish_wactl_using_subcommand send" -l edge -d 'Edge number, 1 to M (DIR/wa-chat.toml is edge 1, DIR/wa-chat-K.toml edge K)' -r
complete -c wactl -n "__fish_wactl_using_subcommand send" -l wait -d 'Wait until the message is accepted, delivered or read' -r -f -a "accepted\t'One tick: the recipient\'s home stored the message'
delivered\t'Two ticks: the recipient\'s device acknowledged it'
read\t'Blue ticks: the recipient marked it read'"
complete -c wactl -n "__fish_wactl_using_subcommand send" -l timeout -d 'Give up (exit 1) when the wait takes longer than this' -r
complete -c wactl -n "__fish_wactl_using_subcommand send" -l tcp -d 'Connect with TLS over TCP (the default)'
complete -c wactl -n "__fish_wactl_using_subcommand send" -l quic -d 'Connect with QUIC'
complete -c wactl -n "__fish_wactl_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand send" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l user -d 'The user id to act as' -r
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l edge -d 'Edge number, 1 to M (DIR/wa-chat.toml is edge 1, DIR/wa-chat-K.toml edge K)' -r
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l timeout -d 'Give up (exit 1) when the answer takes longer than this' -r
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l tcp -d 'Connect with TLS over TCP (the default)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -l quic -d 'Connect with QUIC'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "create" -d 'A new group of USER (its admin) and MEMBERS; prints its id'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "add" -d 'Add MEMBERS to GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "remove" -d 'Remove MEMBERS from GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "send" -d 'Send TEXT to every member of GROUP'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "show" -d 'Print GROUP and its members (members only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and not __fish_seen_subcommand_from create add remove send show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from create" -l subject -d 'The group\'s subject (at most 100 bytes)' -r
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from send" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from send" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "create" -d 'A new group of USER (its admin) and MEMBERS; prints its id'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add MEMBERS to GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove MEMBERS from GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "send" -d 'Send TEXT to every member of GROUP'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print GROUP and its members (members only)'
complete -c wactl -n "__fish_wactl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l user -d 'The user id to receive as' -r
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l edge -d 'Edge number, 1 to M (DIR/wa-chat.toml is edge 1, DIR/wa-chat-K.toml edge K)' -r
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l read -d 'Mark every message read as soon as it is printed'
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l tcp -d 'Connect with TLS over TCP (the default)'
complete -c wactl -n "__fish_wactl_using_subcommand watch" -l quic -d 'Connect with QUIC'
complete -c wactl -n "__fish_wactl_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand watch" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand register" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand register" -l number -d 'The phone number, E.164 (`+15550001234`)' -r
complete -c wactl -n "__fish_wactl_using_subcommand register" -l name -d 'A name for the device' -r
complete -c wactl -n "__fish_wactl_using_subcommand register" -l pin -d 'The registration-lock PIN, if the number has one' -r
complete -c wactl -n "__fish_wactl_using_subcommand register" -l addr -d 'wa-register\'s address (default: the one the running `wactl up` wrote to DIR/register/addr)' -r
complete -c wactl -n "__fish_wactl_using_subcommand register" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand register" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand code" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand code" -l number -d 'The phone number, E.164 (`+15550001234`)' -r
complete -c wactl -n "__fish_wactl_using_subcommand code" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand code" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand man" -l out -d 'Directory for the pages (created if missing): wactl.1, wactl-up.1, ...' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand man" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand man" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand status" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand status" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand status" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand status" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and not __fish_seen_subcommand_from status catch-up help" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and not __fish_seen_subcommand_from status catch-up help" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and not __fish_seen_subcommand_from status catch-up help" -f -a "status" -d 'Show every island: its epoch, each wa-store node\'s role (primary, secondary, or fenced: a primary that may not serve), how far the stream has come (LSN) and how far the secondary is behind (records and seconds)'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and not __fish_seen_subcommand_from status catch-up help" -f -a "catch-up" -d 'Wait until every secondary has caught up with its primary, with a progress bar for each catch-up copy under way'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and not __fish_seen_subcommand_from status catch-up help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from status" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from status" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from status" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from catch-up" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from catch-up" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from catch-up" -l timeout -d 'How long to wait' -r
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from catch-up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from catch-up" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show every island: its epoch, each wa-store node\'s role (primary, secondary, or fenced: a primary that may not serve), how far the stream has come (LSN) and how far the secondary is behind (records and seconds)'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "catch-up" -d 'Wait until every secondary has caught up with its primary, with a progress bar for each catch-up copy under way'
complete -c wactl -n "__fish_wactl_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand sessions" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand sessions" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand sessions" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand sessions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand sessions" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand kick" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand kick" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand kick" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand kick" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand kick" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand queues" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand queues" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand queues" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand queues" -l limit -d 'Mailboxes shown per store' -r
complete -c wactl -n "__fish_wactl_using_subcommand queues" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand queues" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand expire" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand expire" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand expire" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand expire" -l now -d 'Run the expiry sweep now (required: there is no other mode yet)'
complete -c wactl -n "__fish_wactl_using_subcommand expire" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand expire" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -l release -d 'Release this prefix on every wa-register: its code requests get the normal per-prefix rate again. Either the prefix (`+881912`) or the form the list shows (`+8819**`, digits hidden so that logs and screens never show most of a number)' -r
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand pumping" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand push; and not __fish_seen_subcommand_from test help" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand push; and not __fish_seen_subcommand_from test help" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand push; and not __fish_seen_subcommand_from test help" -f -a "test" -d 'Send one push now to a device\'s registered endpoint (APNs, FCM or UnifiedPush), outside the queue, and print what the provider answered'
complete -c wactl -n "__fish_wactl_using_subcommand push; and not __fish_seen_subcommand_from test help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from test" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from test" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from test" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from help" -f -a "test" -d 'Send one push now to a device\'s registered endpoint (APNs, FCM or UnifiedPush), outside the queue, and print what the provider answered'
complete -c wactl -n "__fish_wactl_using_subcommand push; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand drain" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand drain" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand drain" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand drain" -l over -d 'The window over which the sessions are ended' -r
complete -c wactl -n "__fish_wactl_using_subcommand drain" -l grace -d 'How long after the window to wait for the last sessions' -r
complete -c wactl -n "__fish_wactl_using_subcommand drain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand drain" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand backup" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand backup" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand backup" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand backup" -l timeout -d 'How long to wait for the copy to complete' -r
complete -c wactl -n "__fish_wactl_using_subcommand backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand backup" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand restore" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand restore" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -f -a "show" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -f -a "ban" -d 'Ban USER: its sessions end with BANNED and every new login is refused with BANNED (code 34) until `wactl user unban`. Messages to USER are still stored'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -f -a "unban" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -f -a "delete" -d 'Delete USER: the account record, its phone number\'s record, the mailbox; every device is revoked (its sessions end with REVOKED and its credentials are refused for good). The number can then register again, as a new account'
complete -c wactl -n "__fish_wactl_using_subcommand user; and not __fish_seen_subcommand_from show ban unban delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from show" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from show" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from show" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -l reason -d 'Why (kept with the ban, shown by `user show`)' -r
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from ban" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from unban" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from unban" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from unban" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from unban" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from unban" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -l yes -d 'Really delete (there is no undo but a restore)'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "ban" -d 'Ban USER: its sessions end with BANNED and every new login is refused with BANNED (code 34) until `wactl user unban`. Messages to USER are still stored'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "unban" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete USER: the account record, its phone number\'s record, the mailbox; every device is revoked (its sessions end with REVOKED and its credentials are refused for good). The number can then register again, as a new account'
complete -c wactl -n "__fish_wactl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand trace" -l nodes -d 'The node list: TOML with `token_file` (the admin token) and one `[[node]]` per service (`name`, `service`, `admin` = its admin listener). Default: /etc/wa/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand trace" -l dir -d 'A `wactl up` directory: its DIR/wactl.toml' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand trace" -s o -l output -d 'Table for people, or JSON for scripts' -r -f -a "table\t'Aligned columns for people'
json\t'One JSON document for scripts'"
complete -c wactl -n "__fish_wactl_using_subcommand trace" -l from -d 'The sender\'s user id' -r
complete -c wactl -n "__fish_wactl_using_subcommand trace" -l to -d 'The recipient\'s user id' -r
complete -c wactl -n "__fish_wactl_using_subcommand trace" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand trace" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l dir -d 'Deployment directory created by `wactl up`' -r -F
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l edge -d 'Edge number, 1 to M (DIR/wa-chat.toml is edge 1, DIR/wa-chat-K.toml edge K)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l transport -d 'How the sessions connect' -r -f -a "tcp\t'TLS 1.3 over TCP'
quic\t'QUIC'"
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l sessions -d 'Sessions (an even number: pairs of sender and receiver)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l workers -d 'Worker processes the sessions are spread over (0: one per 16,000 sessions)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l source-addresses -d 'TCP sessions connect from 127.0.0.1 to 127.0.0.K in turn (0: the kernel\'s choice), for more than one address\'s ephemeral ports' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l concurrency -d 'Logins in flight at most, over all workers' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l rate -d '`pairs`: messages per second, over all pairs' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l max-rate -d '`pairs --sweep`: the highest rate tried' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l p99-limit -d '`pairs --sweep`: the p99 latency a step must stay within' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l duration -d '`pairs`: length of each step; `idle`: how long the sessions idle' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l messages -d '`offline`: messages queued, over all pairs' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l check -d 'Messages per pair in the check that ends `login`, `idle` and `storm` (and opens the storm)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l body -d 'Bytes per message body (at least 16: the number and the send time)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l connect-timeout -d 'Longest wait for all sessions to log in' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l drain-timeout -d 'Longest wait for the messages sent to arrive, after which the missing ones count as lost' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l storm-timeout -d '`storm`: longest wait for all sessions to be back' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l servers -d 'The server processes measured: DIR/run/NAME*.pid' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l worker-of -d '(Internal: this process is worker INDEX/COUNT/RUN of a bench.)' -r
complete -c wactl -n "__fish_wactl_using_subcommand bench" -l sweep -d '`pairs`: raise the rate by half after every step that met --p99-limit without loss, until one does not (or --max-rate)'
complete -c wactl -n "__fish_wactl_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand bench" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand config; and not __fish_seen_subcommand_from defaults help" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand config; and not __fish_seen_subcommand_from defaults help" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand config; and not __fish_seen_subcommand_from defaults help" -f -a "defaults" -d 'Print SERVICE\'s full default configuration, every key with a comment (the sample shipped in packages; tests prove it equals the defaults)'
complete -c wactl -n "__fish_wactl_using_subcommand config; and not __fish_seen_subcommand_from defaults help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand config; and __fish_seen_subcommand_from defaults" -s h -l help -d 'Print help'
complete -c wactl -n "__fish_wactl_using_subcommand config; and __fish_seen_subcommand_from defaults" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "defaults" -d 'Print SERVICE\'s full default configuration, every key with a comment (the sample shipped in packages; tests prove it equals the defaults)'
complete -c wactl -n "__fish_wactl_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wactl -n "__fish_wactl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "keygen" -d 'Create an Ed25519 token signing key pair'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "token" -d 'Mint a credential token and print it on stdout'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "up" -d 'Run a local deployment: one wa-store, wa-chat, wa-media and wa-register'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "home" -d 'Tell which island is the home of each USER in a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "promote" -d 'Make an island\'s secondary its primary (failover or switchover by hand)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "send" -d 'Send one text message through a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "group" -d 'Make, change, read and send to a group through a `wactl up` deployment'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "watch" -d 'Receive as a user through a `wactl up` deployment, until Ctrl-C'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "register" -d 'Sign up through a `wactl up` deployment\'s wa-register'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "code" -d 'Print the last development SMS code sent to a number'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "man" -d 'Write man pages for wactl and each subcommand'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "status" -d 'Show every node: up or down, ready or not, version, uptime, connections, cluster epoch and link queues'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "cluster" -d 'The islands of the cluster, as their wa-store nodes report them'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "sessions" -d 'List USER\'s sessions on every edge: edge, session id, device, since when'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "kick" -d 'End USER\'s sessions (of one DEVICE, or all) on every edge'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "queues" -d 'Show the longest mailboxes of every store (as of each store\'s last sweep)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "expire" -d 'Delete, on every store now, the undelivered items older than its `[mailbox] expire_after`, instead of waiting for its next sweep (`[mailbox] sweep_interval`)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "pumping" -d 'The SMS-pumping signal of every wa-register: which number prefixes it holds to `pumping.tightened` now, and their release by an operator'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "push" -d 'Push notifications'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "drain" -d 'Take an edge out of service: it turns not ready, refuses new clients and ends its sessions spread over --over, so that they reconnect to the other edges a few at a time'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "backup" -d 'Copy a running store\'s data (every mailbox and every account, phone number and device generation) into DIR on the store\'s machine, while it serves'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "restore" -d 'Make DATA_DIR a copy of the backup BACKUP, for a store to start from'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "user" -d 'An account at its home: show it, ban or unban it, delete it'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "trace" -d 'Where the message MESSAGE_ID from FROM to TO is now, from the records of TO\'s home: stored (accepted or not yet), in memory (and the journal) or in the engine, pushed to which session, acknowledged, deleted, and its delivered receipt'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "bench" -d 'Load a running `wactl up` deployment and measure it'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "config" -d 'Configuration files'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "completions" -d 'Print a completion script for SHELL on stdout'
complete -c wactl -n "__fish_wactl_using_subcommand help; and not __fish_seen_subcommand_from keygen token up home promote send group watch register code man status cluster sessions kick queues expire pumping push drain backup restore user trace bench config completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "create" -d 'A new group of USER (its admin) and MEMBERS; prints its id'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "add" -d 'Add MEMBERS to GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "remove" -d 'Remove MEMBERS from GROUP (admins only)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "send" -d 'Send TEXT to every member of GROUP'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "show" -d 'Print GROUP and its members (members only)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "status" -d 'Show every island: its epoch, each wa-store node\'s role (primary, secondary, or fenced: a primary that may not serve), how far the stream has come (LSN) and how far the secondary is behind (records and seconds)'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "catch-up" -d 'Wait until every secondary has caught up with its primary, with a progress bar for each catch-up copy under way'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from push" -f -a "test" -d 'Send one push now to a device\'s registered endpoint (APNs, FCM or UnifiedPush), outside the queue, and print what the provider answered'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "show" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "ban" -d 'Ban USER: its sessions end with BANNED and every new login is refused with BANNED (code 34) until `wactl user unban`. Messages to USER are still stored'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "unban" -d 'Show USER: account (phone number, devices, registration), device generations, sessions, mailbox length, last seen, ban. Never message contents'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "delete" -d 'Delete USER: the account record, its phone number\'s record, the mailbox; every device is revoked (its sessions end with REVOKED and its credentials are refused for good). The number can then register again, as a new account'
complete -c wactl -n "__fish_wactl_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "defaults" -d 'Print SERVICE\'s full default configuration, every key with a comment (the sample shipped in packages; tests prove it equals the defaults)'
