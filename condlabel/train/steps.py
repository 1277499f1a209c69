"""The optimizer-step loop every Ray Train worker runs, for `condlabel train` and `condlabel
distill` alike: gradient accumulation (synchronising only on the last micro-batch), clipping,
the schedule, a metrics window per report, and a checkpoint every `every_steps` and at the end.
What differs between the two is handed in: how a micro-batch is made and how a checkpoint is
saved."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("condlabel")


def worker_context() -> tuple[int, int, Any]:
    """This Ray Train worker's (rank, world size, torch device)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def prepare_training(
    loaded: Any, settings: Any, precision: str, device: Any, strategy: str = "ddp"
) -> tuple[Any, Any, Any, Any]:
    """(model, optimizer, scheduler, autocast): `loaded.model` wrapped for the workers
    (`strategy`), its optimizer and schedule (`settings`) with the state of `loaded`'s
    checkpoint, and the autocast context of `precision` (`auto`: bf16 on CUDA)."""
    import ray.train.torch
    import torch

    from condlabel.train.checkpoint import restore_training_state
    from condlabel.train.optim import make_optimizer

    model = ray.train.torch.prepare_model(loaded.model, parallel_strategy=strategy)
    optimizer, scheduler = make_optimizer(model, settings)
    if loaded.optimizer_state is not None:
        restore_training_state(model, optimizer, scheduler, loaded.optimizer_state)
    # auto: bf16 only where the GPU computes it (torch would emulate it slowly, or refuse).
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    return model, optimizer, scheduler, autocast


@dataclass
class StepState:
    """Where the loop is; the data pipeline may read `step` (e.g. the cooldown)."""

    step: int
    tokens_seen: int
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepLoop:
    model: Any
    optimizer: Any
    scheduler: Any
    opt: Any
    """`max_steps`, `grad_accum_steps`, `max_grad_norm`, `log_every_steps`."""
    every_steps: int
    """Checkpoint interval."""
    world: int
    rank: int
    device: Any
    autocast: Any
    rate_key: str = "tokens_per_s"
    report: Callable[[dict[str, Any]], None] | None = None
    """Where the metrics between checkpoints go; None: `ray.train.report` (a Ray Train worker).
    A loop driven in process without Ray (bench/gpu_check.py) passes its own."""

    def run(
        self,
        state: StepState,
        micro_batch: Callable[[], tuple[dict[str, Any], int]],
        epoch: Callable[[], int],
        checkpoint: Callable[[dict[str, Any]], None],
    ) -> None:
        """Step until `opt.max_steps`. `micro_batch()`: the model's keyword arguments and the
        tokens they count; `checkpoint(metrics)`: save and report (other reports go to `report`)."""
        import torch

        opt, model = self.opt, self.model
        window = Window()
        while state.step < opt.max_steps:
            for micro in range(opt.grad_accum_steps):
                batch, tokens = micro_batch()
                # Only the last micro-batch of an accumulation synchronises gradients.
                sync = micro == opt.grad_accum_steps - 1 or not hasattr(model, "no_sync")
                with torch.enable_grad() if sync else model.no_sync(), self.autocast:
                    loss = model(**batch).loss / opt.grad_accum_steps
                loss.backward()
                window.add(loss.item(), tokens)
            if opt.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            window.steps += 1

            save = state.step % self.every_steps == 0 or state.step == opt.max_steps
            if state.step % opt.log_every_steps and not save:
                continue
            loss_mean, rate, tokens = window.close(self.world, self.device)
            state.tokens_seen += tokens
            metrics = {
                "step": state.step,
                "loss": loss_mean,
                "learning_rate": lr,
                "epoch": epoch(),
                self.rate_key: rate,
                "tokens_seen": state.tokens_seen,
            }
            state.history.append(metrics)
            if self.rank == 0:
                log.info(
                    "step %d/%d loss %.4f lr %.2e tokens/s %.0f",
                    *(state.step, opt.max_steps, loss_mean, lr, rate),
                )
            if save:
                checkpoint(metrics)
            elif self.report is not None:
                self.report(metrics)
            else:
                import ray.train

                ray.train.report(metrics)
            window.restart()


class Window:
    """Loss and tokens since the last report, for the metrics of the next one."""

    def __init__(self) -> None:
        self.loss, self.steps, self.tokens = 0.0, 0, 0
        self.restart()

    def restart(self) -> None:
        self.started = time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.loss += loss
        self.tokens += tokens

    def close(self, world: int, device) -> tuple[float, float, int]:
        """(mean loss per step, tokens/s, tokens) over every worker; the counts start again."""
        elapsed = time.perf_counter() - self.started
        loss_mean, tokens_mean = mean_over_workers([self.loss / self.steps, self.tokens], device)
        tokens = tokens_mean * world
        self.loss, self.steps, self.tokens = 0.0, 0, 0
        return loss_mean, (tokens / elapsed if elapsed > 0 else 0.0), int(tokens)


def mean_over_workers(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


class Passes:
    """A worker's micro-batches, pass after pass over its shard, in step with the other workers.

    DDP needs every worker to step together: when one worker's pass runs dry, every worker
    closes its pass and all start the next together (Ray Data starts a pass over the dataset
    only when every shard asks for it). `make_pass(epoch)` yields one pass's micro-batches;
    `empty`: the error when a pass gives some worker none at all.
    """

    def __init__(self, make_pass: Callable[[int], Iterator[Any]], device, epoch: int, empty: str):
        self.make_pass, self.device, self.empty = make_pass, device, empty
        self.start(epoch)

    def start(self, epoch: int) -> None:
        self.epoch, self.fresh = epoch, True
        self.batches = self.make_pass(epoch)

    def next(self) -> Any:
        while True:
            item = next(self.batches, None)
            if all_workers_have(item is not None, self.device):
                self.fresh = False
                return item
            if self.fresh:
                raise RuntimeError(self.empty)
            close = getattr(self.batches, "close", None)
            if close is not None:
                close()
            self.start(self.epoch + 1)


def all_workers_have(flag: bool, device) -> bool:
    """True when every worker has a batch; DDP needs all of them to step together."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
