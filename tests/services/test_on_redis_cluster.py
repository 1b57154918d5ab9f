"""The services on a real Redis Cluster (3 masters, a replica each): the end-to-end messaging, key-directory and
notification tests again, and a conversation during master failovers with every message counted.

The suites' tests are taken as they are; this module's ``cluster`` fixture starts their services in cluster mode
(``PARLEY_REDIS_CLUSTER``) on the module's Redis Cluster instead of on a single Redis. Tests that read Redis
themselves through a single-node client stay with their suites.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot
from support.cluster import ADMIN_TOKEN, Cluster
from support.conversation import Endpoints, converse

from parley_relay.app import RelaySettings, build_relay
from parley_runtime import redis_keys
from parley_runtime.testing import RedisClusterServers
from services.keydir import test_keydir as keydir_suite
from services.notification import test_delivery as notification_suite
from services.notification import test_notices as notices_suite
from services.relay import test_delivery as relay_suite

receiver = notification_suite.receiver


@pytest.fixture
def cluster(on_redis_cluster: Cluster) -> Cluster:
    """The suites' services, on the Redis Cluster."""
    return on_redis_cluster


# --- the suites, unchanged ---------------------------------------------------------------------------------

test_live_delivery_in_order_and_delivery_receipts = relay_suite.test_live_delivery_in_order_and_delivery_receipts
test_offline_device_catches_up_and_unacked_stanzas_come_back = (
    relay_suite.test_offline_device_catches_up_and_unacked_stanzas_come_back
)
test_a_stream_on_one_replica_gets_what_another_replica_accepted = (
    relay_suite.test_a_stream_on_one_replica_gets_what_another_replica_accepted
)
test_read_receipts_reach_the_sender_and_the_readers_other_devices = (
    relay_suite.test_read_receipts_reach_the_sender_and_the_readers_other_devices
)

test_bundles_are_claimed_oldest_first_and_verify = keydir_suite.test_bundles_are_claimed_oldest_first_and_verify
test_no_one_time_prekey_is_handed_out_twice_under_concurrency = (
    keydir_suite.test_no_one_time_prekey_is_handed_out_twice_under_concurrency
)
test_signed_prekey_rotation_is_verified = keydir_suite.test_signed_prekey_rotation_is_verified
test_unreachable_users_all_look_the_same = keydir_suite.test_unreachable_users_all_look_the_same
test_fetches_are_rate_limited_per_requester = keydir_suite.test_fetches_are_rate_limited_per_requester

test_message_waiting_reaches_the_devices_provider_signed = (
    notification_suite.test_message_waiting_reaches_the_devices_provider_signed
)
test_a_failing_endpoint_dead_letters_after_max_attempts_and_redrive_delivers = (
    notification_suite.test_a_failing_endpoint_dead_letters_after_max_attempts_and_redrive_delivers
)
test_a_flapping_endpoint_gets_every_event_once_per_key = (
    notification_suite.test_a_flapping_endpoint_gets_every_event_once_per_key
)
test_identity_key_changes_reach_each_requesters_provider = (
    notification_suite.test_identity_key_changes_reach_each_requesters_provider
)
test_a_user_hears_their_notices_and_only_theirs = notices_suite.test_a_user_hears_their_notices_and_only_theirs


# --- failover ------------------------------------------------------------------------------------------------

ANA = "username:ana@gatekeeper"
BEN = "username:ben@birdy"


async def test_a_conversation_survives_master_failovers_without_losing_a_message(
    cluster: Cluster, redis_cluster_servers: RedisClusterServers
) -> None:
    """Ana and Ben write 40 messages each, live on their streams, while the masters holding their mailboxes are
    failed over (CLUSTER FAILOVER: the replica catches up, then takes the slots). Every message arrives once, and
    through hints: idle streams would re-read their mailboxes only every 600 s, so the relay's shard
    subscriptions must have followed their slots to the new masters."""
    await cluster.start_identity()
    await cluster.start_keydir()
    await cluster.start("relay", RelaySettings, build_relay, replica="relay-0", stream_poll_s=600)
    masters = {port: node for node in redis_cluster_servers.masters() for port in [node.port]}
    owners = {_owner_port(redis_cluster_servers, user) for user in (ANA, BEN)}
    assert owners <= masters.keys()

    async def fail_over() -> None:
        for port in sorted(owners):
            await asyncio.to_thread(redis_cluster_servers.failover, masters[port])

    tally = await converse(
        Endpoints(identity=cluster.target("identity"), keydir=cluster.target("keydir"), admin_token=ADMIN_TOKEN),
        ana_relay=cluster.target("relay"),
        ben_relay=cluster.target("relay"),
        messages=40,
        meanwhile=fail_over,
    )
    assert tally.ben.read == tally.sent_to_ben
    assert tally.ana.read == tally.sent_to_ana
    assert len(tally.sent_to_ben) == len(tally.sent_to_ana) == 40
    # The failed-over masters are replicas now; their replicas hold the slots.
    assert not owners & {node.port for node in redis_cluster_servers.masters()}


def _owner_port(servers: RedisClusterServers, user: str) -> int:
    """The port of the master owning ``user``'s slot (all of the user's keys share it)."""
    import redis  # noqa: PLC0415 -- the sync client only asks the topology

    slot = key_slot(redis_keys.mailbox(user, 1).encode())
    with redis.RedisCluster.from_url(servers.url) as client:
        return int(client.nodes_manager.get_node_from_slot(slot).port)
