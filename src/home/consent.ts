// The administrator's consent (RFC 9066 section 5.3.1: blocking MAY need it; a knob chooses).
// Each request waits for approve/reject; the timeout counts as the configured answer.
import { HomeError } from "./errors";

export type ConsentPolicy = { mode: "auto" } | { mode: "manual"; timeoutMs: number; onTimeout: "reject" | "approve" };

export interface ConsentAnswer {
  answer: "approved" | "rejected" | "cancelled";
  by: "auto" | "admin" | "timeout" | "cancel";
}

interface Waiting {
  resolve(a: ConsentAnswer): void;
  timer: NodeJS.Timeout;
  deadline: number;
}

export class ConsentGate {
  private readonly waiting = new Map<string, Waiting>();

  constructor(
    readonly policy: ConsentPolicy,
    private readonly maxPending = 1024,
  ) {
    if (policy.mode === "manual" && (!Number.isFinite(policy.timeoutMs) || policy.timeoutMs <= 0)) {
      throw new HomeError("INVALID_SCOPE", "consent.timeoutMs must be a positive number of milliseconds");
    }
  }

  /**
   * Resolves when answered (never rejects); with mode "auto" at once. A second request for the
   * same id replaces the first (cancelled). Throws when maxPending requests already wait.
   */
  request(id: string): Promise<ConsentAnswer> {
    if (this.policy.mode === "auto") return Promise.resolve({ answer: "approved", by: "auto" });
    const policy = this.policy;
    this.settle(id, { answer: "cancelled", by: "cancel" });
    if (this.waiting.size >= this.maxPending) {
      throw new HomeError("COMMAND_FAILED", `more than ${this.maxPending} consent requests are pending`);
    }
    return new Promise<ConsentAnswer>((resolve) => {
      const timer = setTimeout(() => {
        this.settle(id, { answer: policy.onTimeout === "approve" ? "approved" : "rejected", by: "timeout" });
      }, policy.timeoutMs);
      this.waiting.set(id, { resolve, timer, deadline: Date.now() + policy.timeoutMs });
    });
  }

  approve(id: string): boolean {
    return this.settle(id, { answer: "approved", by: "admin" });
  }

  reject(id: string): boolean {
    return this.settle(id, { answer: "rejected", by: "admin" });
  }

  cancel(id: string): boolean {
    return this.settle(id, { answer: "cancelled", by: "cancel" });
  }

  isPending(id: string): boolean {
    return this.waiting.has(id);
  }

  deadline(id: string): number | undefined {
    return this.waiting.get(id)?.deadline;
  }

  pendingIds(): string[] {
    return [...this.waiting.keys()];
  }

  /** Cancels everything still waiting. */
  close(): void {
    for (const id of [...this.waiting.keys()]) this.cancel(id);
  }

  private settle(id: string, a: ConsentAnswer): boolean {
    const w = this.waiting.get(id);
    if (!w) return false;
    this.waiting.delete(id);
    clearTimeout(w.timer);
    w.resolve(a);
    return true;
  }
}
