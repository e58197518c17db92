"""Running attacks: one attack x gradient path on a batch with verification (``sweep``), the protocol's cascade of
stages (``cascade``), the stored adversarial examples (``adversarial``), their verification (``verify``) and the
reliability checks (``checks``). Import the owning module: ``from robench.eval.sweep import evaluate``."""
