"""The drill on MySQL: local MariaDB servers standing in for Aurora MySQL (a primary, a GTID replica
behind the lag injector) and the failover rig built on them."""
