"""Events: hackathons and schools an organiser runs by themselves (issue 12, item 3).

model.py (what an event is, checked against the facility), store.py (events, join codes and participants in the
facility's admin database), join.py (the hub page where a join code becomes a temporary account) and keeper.py
(the end of an event: sessions stopped, temporary accounts gone, the organiser's usage report).
"""
