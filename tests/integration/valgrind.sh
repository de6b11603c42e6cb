#!/bin/sh
# valgrind.sh: a short run of each role under valgrind memcheck: the
# integration tests below, with every p2pmesh they start wrapped in
# valgrind (conftest.py, PM_VALGRIND=1). A test fails when a process it
# started reports a memory error or a definitely or indirectly lost block.
# Needs a build without --enable-asan (exit 77, skip, on an ASan build).
#
#   PM_BIN   the binary (default: <repo>/p2pmesh)
set -u
dir=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
bin=${PM_BIN:-$dir/../../p2pmesh}
if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind is missing: run tests/lib/deps.sh test"
    exit 99
fi
if [ ! -x "$bin" ]; then
    echo "no binary at $bin"
    exit 99
fi
if ldd "$bin" | grep -q libasan; then
    echo "SKIP: $bin is an ASan build; valgrind runs on a plain build (make check-valgrind)"
    exit 77
fi
cd "$dir" || exit 99
PM_VALGRIND=1 PM_REQUIRE_BIN=1 PM_BIN=$bin
export PM_VALGRIND PM_REQUIRE_BIN PM_BIN
# One short run per role: sessions, relays, stores, errors and shutdown.
"$py" -m pytest -q -p no:cacheprovider \
    "test_signaling.py::test_join_announces_to_realm_and_bootstraps" \
    "test_signaling.py::test_relay_keeps_the_senders_bytes" \
    "test_signaling.py::test_mailbox_delivers_in_order_after_bootstrap" \
    "test_signaling.py::test_invalid_json_keeps_connection" \
    "test_peerjs.py::test_relay_both_ways_and_metrics" \
    "test_peerjs.py::test_offline_queue_replayed_in_order_after_open" \
    "test_ywebrtc.py::test_publish_reaches_every_subscriber_with_clients_count" \
    "test_mailbox.py::test_pairing_flow" \
    "test_cluster.py::test_peers_on_two_instances_find_and_reach_each_other" \
    "test_auth.py::test_query_token_joins_as_its_sub" \
    "test_ws_conformance.py::test_5_19_pings_between_each_of_five_fragments" \
    "test_ws_conformance.py::test_6_4_invalid_only_across_the_fragment_boundary" \
    "test_lifecycle.py::test_sigterm_closes_clients_1001_and_exits_0" \
    "test_chat_ws.py::test_room_chat_between_two_users" \
    "test_chat_ws.py::test_history_pagination_rest_and_ws" \
    "test_chat_ws.py::test_protocol_errors" \
    "test_tunnel_server.py::test_curl_https_proxy_connect" \
    "test_tunnel_server.py::test_no_client_certificate_is_refused" \
    "test_tunnel_agent.py::test_absolute_form_get_with_query_reaches_the_origin" \
    "test_tunnel_agent.py::test_websocket_through_connect_echoes_text_and_binary" \
    "test_game.py::test_duel_played_to_the_end" \
    "test_game.py::test_malformed_and_unknown_messages_keep_the_socket" \
    "test_game.py::test_sigterm_sends_server_shutdown_then_1001" \
    "test_lambda.py::test_join_bootstrap_and_announce" \
    "test_lambda.py::test_signal_relay_overwrites_from" \
    "test_lambda.py::test_sigterm_between_invocations_exits_0"
rv=$?
[ "$rv" -eq 5 ] && { echo "pytest collected no tests"; exit 1; }
exit "$rv"
