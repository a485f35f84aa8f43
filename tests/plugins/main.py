"""`python -m ferjax.main` with the plug-ins of this package registered."""

from ferjax import main
from ferjax.evaluators import registry as evaluator_registry
from ferjax.objectives import registry as objective_registry
from plugins import ema_targets, top_k

objective_registry.register("ema_targets", ema_targets.from_config)
evaluator_registry.register("top_k", top_k.from_config)

if __name__ == "__main__":
  main.run()
