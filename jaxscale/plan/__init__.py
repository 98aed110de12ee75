"""`jaxscale plan`: the capacity-plan command (its logic is `jaxscale.study.plan`)."""
