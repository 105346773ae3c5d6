"""dst-train's config files (Hydra's search path pkg://dst_cli.conf).

Importing this package registers the schema and every derived group option (dst_cli.schema) in Hydra's
ConfigStore, so whatever composes these files finds them: dst-train, or Hydra's compose API in a test or a
notebook."""
import dst_cli.schema  # noqa: F401
