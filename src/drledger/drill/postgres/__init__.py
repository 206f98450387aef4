"""The drill on PostgreSQL: local clusters (a primary, a streaming replica behind the lag injector) and
the failover rig built on them."""
