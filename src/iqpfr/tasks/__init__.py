"""Tasks beyond face restoration that reuse IQPFR's quality-prior machinery (underwater enhancement)."""
