"""The training order across hosts (clip_jax.data.order): a run continued on another
number of hosts reads every example of the epochs in progress exactly once, in block mode,
in stride mode (fewer blocks than hosts) and through a chain of host counts; corrupt
samples stay skipped and counted.  Iterators of several hosts run in this process, each
with its own process_index, as the hosts of a pod would."""
import collections
import json

import pytest

from clip_jax import data
from clip_jax.data import order
from tests.helpers.data import jpeg, write_tar
from tests.helpers.pod import trained_examples

SHARDS, PER_SHARD = 7, 9
CORRUPT = {"s1-e2", "s4-e7"}  # bytes that do not decode: skipped and counted


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("order")
    for s in range(SHARDS):
        samples = []
        for e in range(PER_SHARD):
            key = f"s{s}-e{e}"
            image = b"\xff\xd8\xff\xe0 not a jpeg" if key in CORRUPT else jpeg(20, 24, seed=s * 100 + e)
            samples.append((key, {"jpg": image, "txt": key.encode()}))
        write_tar(str(folder / f"part-{s:03d}.tar"), samples)
    return f"wds:{folder}/part-{{000..{SHARDS - 1:03d}}}.tar"


GOOD = sorted(f"s{s}-e{e}" for s in range(SHARDS) for e in range(PER_SHARD) if f"s{s}-e{e}" not in CORRUPT)


def iterator(spec, trace, host, hosts, batch_size, units_per_block):
    return data.train_iterator(spec, batch_size=batch_size, image_size=16, seed=5, shuffle_buffer=8, epochs=2,
                               units_per_block=units_per_block, process_index=host, process_count=hosts,
                               trace_dir=str(trace))


def run_hosts(spec, trace, hosts, states, batches, units_per_block):
    """`batches` batches of 3 on each of `hosts` hosts (None: to the end, in batches of 1
    so nothing is dropped), starting from `states` (every old host's state); the new states."""
    out = []
    for host in range(hosts):
        it = iterator(spec, trace, host, hosts, 3 if batches else 1, units_per_block)
        if states:
            it.set_host_states(states)
        if batches:
            for _ in range(batches):
                next(it)
        else:
            for _ in it:
                pass
        out.append(json.loads(json.dumps(it.get_state())))
        it.close()
    return out


@pytest.mark.parametrize("counts, units_per_block", [
    ((2, 4), 1),  # block mode throughout
    ((4, 1), 1),
    ((2, 3, 1), 2),  # a chain: the second resume splits the first one's left-over items
    ((1, 4), 4),  # 2 blocks for 4 hosts: stride mode after the resume
    ((3, 2), 4),  # stride mode before the resume
])
def test_resume_on_another_host_count_reads_each_example_once(shards, tmp_path, counts, units_per_block):
    states = None
    for i, hosts in enumerate(counts[:-1]):
        states = run_hosts(shards, tmp_path / f"seg{i}", hosts, states, batches=4 + i, units_per_block=units_per_block)
    last = run_hosts(shards, tmp_path / "last", counts[-1], states, batches=None, units_per_block=units_per_block)
    traces = [str(tmp_path / f"seg{i}") for i in range(len(counts) - 1)] + [str(tmp_path / "last")]
    seen = trained_examples([(trace, 0, 10**9) for trace in traces])  # every batch each segment read
    for epoch in (0, 1):
        keys = collections.Counter({key: n for (key, e), n in seen.items() if e == epoch})
        assert sorted(keys) == GOOD and set(keys.values()) == {1}, (epoch, keys.most_common(3))
    assert sum(state["counters"]["skipped_images"] for state in last) == 2 * len(CORRUPT)


def test_same_host_count_continues_each_host_exactly(shards, tmp_path):
    first = run_hosts(shards, tmp_path / "a", 2, None, batches=3, units_per_block=1)
    again = run_hosts(shards, tmp_path / "b", 2, first, batches=2, units_per_block=1)
    straight = run_hosts(shards, tmp_path / "c", 2, None, batches=5, units_per_block=1)
    assert again == straight


def test_host_states_that_do_not_fit_are_refused(shards, tmp_path):
    states = run_hosts(shards, tmp_path / "a", 2, None, batches=1, units_per_block=1)
    it = iterator(shards, tmp_path / "b", 0, 3, 3, 1)
    with pytest.raises(ValueError, match="process_index=0 but this iterator has process_index=1"):
        it.set_host_states([states[0], states[0]])
    other_block = iterator(shards, tmp_path / "b", 0, 3, 3, 2)
    with pytest.raises(ValueError, match="units_per_block=1 but this iterator has units_per_block=2"):
        other_block.set_host_states(states)


def test_item_algebra():
    layout = order.Layout(num_units=5, units_per_block=2, process_index=0, process_count=2)
    assert layout.num_blocks == 3 and not layout.stride and layout.own_blocks() == [0, 2]
    stride = order.Layout(num_units=2, units_per_block=2, process_index=1, process_count=3)
    assert stride.stride and stride.own_item(0, 0) == [0, 0, 3, [order.NEVER, 0, order.NEVER]]
    # Two hosts in stride mode, one 4 elements into block 0, the other 6: dealt to one host.
    positions = [{"pending": [], "epoch": 0, "index": 0, "offset": 4}, {"pending": [], "epoch": 0, "index": 0,
                                                                          "offset": 6}]
    one = order.Layout(num_units=1, units_per_block=1, process_index=0, process_count=2)
    merged = order.rebalance(positions, order.Layout(1, 1, 0, 1))
    assert merged["pending"] == [[0, 0, 2, [4, 6]]] and merged["epoch"] == 1
    assert one.stride
